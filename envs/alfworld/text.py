"""Model-facing text of ALFWorld: parsing ``<action>`` responses, writing responses, and the two prompt styles
(``compact`` for the tiny model, ``verl_agent`` as verl-agent / SDAR prompt ALFWorld)."""

from __future__ import annotations

import re

from craft_pl.envs.base import PromptParts, Turn
from craft_pl.envs.response_format import action_body, format_response  # noqa: F401 (format_response: this module's API)

PROMPT_STYLES = ("compact", "verl_agent")
_COMMAND_RE = re.compile(r"[a-z0-9 ]+")
"""ALFWorld commands are lower-case words and numbers (``take apple 1 from countertop 2``)."""
_BANNER = "-= Welcome to TextWorld, ALFRED! =-"


def normalize_command(text: object) -> str | None:
    """A command lower-cased with single spaces, or ``None`` if it cannot be an ALFWorld command."""
    if not isinstance(text, str):
        return None
    command = " ".join(text.lower().split())
    return command if command and _COMMAND_RE.fullmatch(command) else None


def parse_action(text: object) -> tuple[str | None, bool]:
    """``(command, True)`` for ``<think>...</think><action>command</action>`` (each tag once, in that order, nothing
    between or after the blocks but whitespace and a trailing end-of-text marker); ``(None, False)`` otherwise.
    Never raises. Whether the command is admissible is the environment's call."""
    command = normalize_command(action_body(text))
    return (command, True) if command is not None else (None, False)


def room_text(observation: str) -> str:
    """An observation without the welcome banner and the task line (the prompt states the task)."""
    lines = [line for line in observation.strip().split("\n")
             if line.strip() and line.strip() != _BANNER and not line.startswith("Your task is to:")]
    return " ".join(lines)


def compact_prompt(instruction: str, history: list[Turn], observation: str, step_index: int,
                   actions: list[str]) -> PromptParts:
    """Task, the last turns (observation and action), the step number (hints are numbered by step), the current
    observation and the admissible commands."""
    lines = tuple(f"[obs] {room_text(t.observation)} [act] {t.action}\n" for t in history)
    current = (f"Step {step_index + 1}. Observation: {room_text(observation)}\nActions: {', '.join(actions)}\n"
               "Respond with <think>...</think><action>...</action>.\n")
    return PromptParts(preamble=f"Task: {instruction}.\n", history=lines, current=current)


_VERL_INTRO = "You are an expert agent operating in the ALFRED Embodied Environment."
_VERL_REQUEST = (
    "\n\nNow it's your turn to take an action.\n"
    "You should first reason step-by-step about the current situation. This reasoning process MUST be enclosed "
    "within <think> </think> tags.\n"
    "Once you've finished your reasoning, you should choose an admissible action for current step and present it "
    "within <action> </action> tags.\n"
)


def verl_agent_prompt(instruction: str, history: list[Turn], observation: str, step_index: int,
                      actions: list[str]) -> PromptParts:
    """verl-agent's ALFWorld template (its "observaitons" typo kept); step 1 uses the no-history variant."""
    listed = "\n ".join(f"'{a}'" for a in actions)
    tail = f"Your admissible actions of the current situation are: [{listed}]." + _VERL_REQUEST
    if step_index == 0:
        return PromptParts(f"{_VERL_INTRO}\n", (), f"Your current observation is: {observation}\n" + tail)
    first = step_index - len(history) + 1
    preamble = (f"{_VERL_INTRO} Your task is to: {instruction}\nPrior to this step, you have already taken "
                f"{step_index} step(s). Below are the most recent {len(history)} observaitons and the corresponding "
                "actions you took:")
    entries = tuple(f"\n[Observation {first + i}: '{t.observation}', Action {first + i}: '{t.action}']"
                    for i, t in enumerate(history))
    current = f"\nYou are now at step {step_index + 1} and your current observation is: {observation}\n" + tail
    return PromptParts(preamble, entries, current)
