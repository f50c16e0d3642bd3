"""Environments for craft_pl (installed as ``craft_pl.envs``)."""

from craft_pl.envs.base import AgentEnv, Expert, PromptParts, StepResult, Task, Turn

__all__ = ["AgentEnv", "Expert", "PromptParts", "StepResult", "Task", "Turn"]
