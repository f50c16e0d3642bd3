"""The contract every craft_pl environment implements.

An environment is one episode at a time (the collector holds G x B instances). Everything the agent sees goes
through text: ``reset`` returns the first observation, ``step`` takes the *parsed* action string. Task panels are
derived from ``(split, seed)`` only, never from worker count or file order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    """One task of a panel; siblings of a GRPO group share the same ``Task``."""

    task_id: str
    """Stable identifier, unique within the environment (e.g. ``"webshop/train/00017"``)."""
    task_type: str
    """Bucket for per-type metrics and skill routing (e.g. ``"footwear"``)."""
    instruction: str
    """What the agent is asked to do, exactly as shown in its prompt."""
    payload: Any = None
    """Environment-private data needed to run and score the task (never shown to the agent)."""


@dataclass(frozen=True)
class Turn:
    """One past (observation, action) pair of an episode, as the prompt's history shows it."""

    observation: str
    action: str


@dataclass(frozen=True)
class PromptParts:
    """A prompt kept in pieces until tokenisation, so that history can be truncated first.

    ``render()`` is ``preamble + "".join(history) + current``.
    """

    preamble: str
    history: tuple[str, ...] = field(default_factory=tuple)
    current: str = ""

    def render(self, keep_history: int | None = None) -> str:
        """The prompt text, keeping only the last ``keep_history`` history entries when given."""
        history = self.history if keep_history is None else self.history[len(self.history) - keep_history :]
        return self.preamble + "".join(history) + self.current


@dataclass(frozen=True)
class StepResult:
    """What ``AgentEnv.step`` returns."""

    observation: str
    reward: float
    """Environment reward of this step (WebShop: 10 x success on the final step, else 0). No invalid penalty."""
    done: bool
    info: dict[str, Any]
    """At least ``valid_action`` (bool); on the final step ``won`` (bool) and ``score`` (float in [0, 1])."""


class Expert(ABC):
    """A scripted policy that acts only on what the agent sees (instruction, observations, admissible actions)."""

    @abstractmethod
    def reset(self, instruction: str) -> None:
        """Start a new episode for this instruction."""

    @abstractmethod
    def act(self, observation: str, admissible_actions: list[str]) -> str:
        """The next action string (e.g. ``"click[buy now]"``), chosen from what is visible."""


class AgentEnv(ABC):
    """A multi-turn text environment for LLM agents."""

    max_turns: int = 15
    """Episode horizon; the collector stops a trajectory after this many turns."""
    invalid_action_penalty: float = 0.1
    """Subtracted from a row's reward when that turn's action was invalid (verl-agent semantics)."""
    eval_temperature: float = 0.4
    """Sampling temperature of evaluation under the paper's protocol (0 = greedy; Search-QA evaluates greedily)."""

    @abstractmethod
    def task_panel(self, split: str, size: int, seed: int) -> list[Task]:
        """A fixed list of ``size`` tasks of ``split`` (``train``/``val``/``test``), a function of the seed only."""

    @property
    @abstractmethod
    def task_types(self) -> list[str]:
        """All task-type names this environment can emit, for per-type metrics."""

    @abstractmethod
    def reset(self, task: Task) -> str:
        """Start an episode on ``task``; returns the first observation."""

    @abstractmethod
    def step(self, action: str | None) -> StepResult:
        """Apply a parsed action (``None`` = unparseable output). Invalid actions leave the state unchanged."""

    @property
    @abstractmethod
    def admissible_actions(self) -> list[str]:
        """Actions allowed in the current state, as the prompt lists them."""

    @abstractmethod
    def parse_action(self, text: str) -> tuple[str | None, bool]:
        """Project raw model output to ``(action, well_formed)``; never raises, whatever the text."""

    @abstractmethod
    def prompt(self, task: Task, history: list[Turn], observation: str, step_index: int) -> PromptParts:
        """The student prompt for this turn: task, last-k history, current observation, admissible actions."""

    @abstractmethod
    def format_response(self, action: str) -> str:
        """A well-formed model response carrying ``action`` (the expert's demonstrations use it)."""

    @abstractmethod
    def make_expert(self) -> Expert:
        """A fresh expert policy for demonstrations and tests."""

    def privileged_context(self, task: Task) -> str:
        """Text the teacher sees before the student prompt (skills or hints); the student never sees it."""
        raise NotImplementedError(f"{type(self).__name__} offers no privileged context")

    def close(self) -> None:
        """Release resources (files, subprocesses)."""
