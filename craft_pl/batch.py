"""The data every room passes along, and nothing else: episodes, their turns, and the loss batch.

This module imports no environment and no rollout machinery. Environments build on its ``Task`` / ``Turn`` /
``PromptParts`` (``craft_pl.envs.base`` re-exports them); the collector fills ``Trajectory`` and ``TurnRecord``;
experience turns them into a ``RolloutBatch`` (tensors and ids only) plus a ``TurnTexts`` side record with the text
that inspection needs, keyed by ``(trajectory_id, turn)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Callable

import torch


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


INVALID_ACTION = "invalid action"
"""What a prompt's history shows in place of an action the environment did not admit (or could not parse)."""
INVALID_HISTORY = ("placeholder", "text")


def check_invalid_history(mode: str) -> str:
    if mode not in INVALID_HISTORY:
        raise ValueError(f"invalid_history={mode!r} is invalid; use 'placeholder' (later prompts show "
                         f"{INVALID_ACTION!r}) or 'text' (they show the command the agent wrote)")
    return mode


def history_action(action: str | None, valid: bool, invalid_history: str) -> str:
    """What later prompts' history shows for a turn's ``action`` (``None``: the response had no parsable action).
    A valid action shows as itself; an invalid one as ``INVALID_ACTION`` under ``placeholder``, and under ``text``
    as the command written (so the agent can see what it tried; the environment's reply follows as the next
    observation), a response without a parsable action still as ``INVALID_ACTION``."""
    if valid or (invalid_history == "text" and action):
        return action
    return INVALID_ACTION


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

    def with_context(self, privileged_context: str) -> "PromptParts":
        """The teacher's view of this prompt: the privileged text, then the student's prompt unchanged."""
        return PromptParts(privileged_context + self.preamble, self.history, self.current)


@dataclass
class TurnRecord:
    """One turn of an episode as the agent lived it."""

    prompt_parts: PromptParts
    prompt_ids: list[int]
    response_ids: list[int]
    sampling_logp: list[float]
    valid_action: bool
    history_dropped: int
    """Oldest history entries left out of the student prompt to fit its budget."""
    anchor: str = ""
    """The state the agent acted in (``AgentEnv.anchor`` of the observation): siblings with equal anchors at a turn
    stood in the same state."""


@dataclass
class Trajectory:
    """One episode: its task, its place in the step (group, trajectory id), its turns and its outcome."""

    task: Task
    group_id: int
    trajectory_id: int
    turns: list[TurnRecord] = field(default_factory=list)
    episode_reward: float = 0.0
    won: bool = False
    score: float = 0.0
    env_error: bool = False
    done: bool = False
    privileged_context: str = ""


@dataclass(frozen=True)
class TurnText:
    """What a row of the loss batch looked like as text (for inspection; never read by the loss)."""

    task_id: str
    task_type: str
    observation: str
    prompt_parts: PromptParts
    privileged_context: str = ""
    history_dropped: int = 0
    """Oldest history entries the student prompt left out to fit its budget."""


TurnTexts = dict[tuple[int, int], TurnText]
"""Side record of one RL step's text, keyed by ``(trajectory_id, turn)``."""


@dataclass
class RolloutBatch:
    """Rows of one RL step (or a mini-batch of them): one row per (trajectory, turn), tensors and ids only.

    Per-row tensors are ``[rows]``; per-token tensors are ``[rows, tokens]`` with ``response_mask`` marking real
    response tokens. ``extras`` holds per-row or per-token tensors that objectives and pillars add in ``prepare``.
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    response_mask: torch.Tensor
    group_ids: torch.Tensor
    trajectory_ids: torch.Tensor
    turn_index: torch.Tensor
    anchor_ids: torch.Tensor
    """``[rows]`` long: rows of one group whose anchor state at their turn is the same share an id; ids of different
    groups never coincide."""
    rewards: torch.Tensor
    """Episode reward minus the invalid-action penalty of this row's turn (verl-agent)."""
    valid_action: torch.Tensor
    sampling_logp: torch.Tensor
    """Log-probs under the distribution that sampled the tokens (temperature / top-p applied)."""
    old_logp: torch.Tensor | None = None
    """No-grad forward of the rollout-time weights (the PPO ratio's denominator)."""
    ref_logp: torch.Tensor | None = None
    """Base weights with adapters disabled (or the frozen reference copy)."""
    teacher_logp: torch.Tensor | None = None
    """Same rollout-time weights (or the teacher adapter), prompt with the privileged context prepended."""
    state_ids: torch.Tensor | None = None
    """``[rows]`` long: rows of one group whose anchor state is the same, at any turn, share an id (GiGPO's step
    groups as verl-agent forms them); ids of different groups never coincide."""
    advantages: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    num_tokens: int | None = None
    """Valid tokens over which this mini-batch's token-mean is taken (set when mini-batches are cut)."""
    step_stats: dict[str, float] = field(default_factory=dict)
    """The RL step's rollout statistics and timings, carried to the learner by the step's first mini-batch only
    (empty on every other mini-batch and on any selection of rows)."""
    temperature: float = 1.0
    """The rollout temperature: every log-prob of these responses (old, reference, teacher, the update's) is taken
    from logits divided by it, so that the PPO ratio compares the distribution that sampled them (verl does the
    same). 1.0 for greedy rollouts."""

    @property
    def num_rows(self) -> int:
        return len(self.prompt_ids)

    def select(self, index: torch.Tensor) -> "RolloutBatch":
        """The rows ``index`` (a 1-D long tensor), in that order."""
        picked = {}
        positions = index.tolist()
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "step_stats":
                picked[f.name] = {}
            elif isinstance(value, torch.Tensor):
                picked[f.name] = value[index]
            elif isinstance(value, list):
                picked[f.name] = [value[i] for i in positions]
            elif isinstance(value, dict):
                picked[f.name] = {key: tensor[index] for key, tensor in value.items()}
            else:
                picked[f.name] = value
        return RolloutBatch(**picked)


def anchor_ids(group_ids: list[int], turn_index: list[int], anchors: list[str]) -> torch.Tensor:
    """``[rows]`` long ids, equal exactly where (group, turn, anchor text) are equal, numbered by first appearance."""
    numbering: dict[tuple[int, int, str], int] = {}
    ids = [numbering.setdefault((g, t, a), len(numbering)) for g, t, a in zip(group_ids, turn_index, anchors)]
    return torch.tensor(ids, dtype=torch.long)


def state_ids(group_ids: list[int], anchors: list[str]) -> torch.Tensor:
    """``[rows]`` long ids, equal exactly where (group, anchor text) are equal whatever the turn, numbered by first
    appearance."""
    numbering: dict[tuple[int, str], int] = {}
    ids = [numbering.setdefault((g, a), len(numbering)) for g, a in zip(group_ids, anchors)]
    return torch.tensor(ids, dtype=torch.long)


# ---------------------------------------------------------------------------------------------------- hand-overs
@dataclass
class DataFacts:
    """What the learner needs from the data side, handed over once (``craft_pl.module.connect``)."""

    env_name: str
    task_types: list[str]
    has_privileged_context: bool
    group_size: int
    demonstrations: Callable[[int, float, float, float], list[tuple[str, str]]]
    """``(count, privileged_fraction, recovery_rate, recovery_run) -> [(prompt text, response text)]``: expert
    demonstrations for the warm start and the tokenizer corpus."""
    evaluate: Callable[[], list[list[Trajectory]]]
    """Runs the validation panel now: ``[plain episodes, privileged episodes (empty when not run)]``."""
    hint_is_reliable: Callable[[Task], bool] = lambda task: True
    """Whether a task's privileged hint is correct (``AgentEnv.hint_is_reliable``; the environment's
    ``hint_reliability`` makes the others mislead), for splitting the privileged evaluation."""
    signal_at_start: Callable[[], dict[str, float]] | None = None
    """Runs the validation panel's signal diagnostics now (greedy success, pass@G), or None when switched off."""
    student_demonstrations: Callable[..., list[tuple[str, str]]] | None = None
    """``(count, model, tokenizer, encode_prompt, temperature, seed) -> [(prompt text, response text)]``: states the
    model reaches when it plays, labelled by the expert (the warm start's ``student_episodes``, DAgger)."""
