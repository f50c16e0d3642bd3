"""The contract every craft_pl environment implements, as a template.

An environment is one episode at a time (the collector holds G x B instances). Everything the agent sees goes
through text: ``reset`` returns the first observation, ``step`` takes the *parsed* action string. Task panels are
derived from ``(split, seed)`` only, never from worker count or file order.

``AgentEnv`` owns the bookkeeping every environment shares: the turn counter, the horizon, the final outcome, the
"call reset first" and "episode already over" cases, and the checks of the common constructor arguments. An
environment writes only its own parts: ``start`` (begin an episode), ``transition`` (one action's effect), its
parser, its prompt, its expert and, if it has any, its privileged context.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from craft_pl.batch import PromptParts, Task, Turn  # noqa: F401 - the environment API names them from here


@dataclass(frozen=True)
class StepResult:
    """What ``AgentEnv.step`` returns (and ``AgentEnv.transition``, before the horizon is applied)."""

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

    def overruled(self, action: str, executed_valid: bool) -> None:
        """The environment executed another action than ``action`` (the one ``act`` just returned): a recovery
        demonstration's perturbation; ``executed_valid`` is false when that other action was invalid (the state is
        unchanged). Experts that read every observation need nothing here; experts that follow a plan put the step
        back or replan."""


def require(ok: bool, owner: str, name: str, value: Any, fix: str) -> None:
    """Raise ``ValueError("<owner>: <name>=<value> is invalid; <fix>")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{owner}: {name}={value!r} is invalid; {fix}")


def hint_draw(task_id: str, hint_seed: int) -> float:
    """A number in [0, 1) fixed by ``(task_id, hint_seed)`` alone (a stable hash, not Python's salted ``hash``)."""
    digest = hashlib.blake2b(f"craft-hint:{hint_seed}:{task_id}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


class AgentEnv(ABC):
    """A multi-turn text environment for LLM agents (template: subclasses write ``start`` and ``transition``)."""

    max_turns: int = 15
    """Episode horizon; ``step`` ends the episode after this many turns."""
    invalid_action_penalty: float = 0.1
    """Subtracted from a row's reward when that turn's action was invalid (verl-agent semantics)."""
    eval_temperature: float = 0.4
    """Sampling temperature of evaluation under the paper's protocol (0 = greedy; Search-QA evaluates greedily)."""
    stop_strings: tuple[str, ...] = ("</action>",)
    """A response ends once it ends with one of these (kept in the response)."""
    prompt_styles: tuple[str, ...] = ()
    """Accepted values of the ``prompt_style`` argument (empty: the environment has one style)."""
    privileged_modes: tuple[str, ...] = ()
    """Accepted values of the ``privileged`` argument (empty: no choice)."""
    hint_mode: str = "hint"
    """The ``privileged`` value whose context is a per-task hint (the only one ``hint_reliability`` applies to)."""
    hint_reliability: float = 1.0
    """Share of tasks whose hint is correct (``set_hint_reliability``; 1 = every hint, as without the setting)."""
    hint_seed: int = 0
    """Seed of the draw of the tasks whose hint misleads (independent of ``seed_everything``)."""

    def __init__(self, max_turns: int = 15, invalid_action_penalty: float = 0.1, prompt_style: str | None = None,
                 privileged: str | None = None) -> None:
        """Checks and stores the arguments every environment shares; call it first from a subclass constructor."""
        owner = type(self).__name__
        require(isinstance(max_turns, int) and max_turns >= 1, owner, "max_turns", max_turns, "use an int >= 1")
        require(isinstance(invalid_action_penalty, (int, float)) and invalid_action_penalty >= 0, owner,
                "invalid_action_penalty", invalid_action_penalty, "use a number >= 0")
        if self.prompt_styles:
            require(prompt_style in self.prompt_styles, owner, "prompt_style", prompt_style,
                    f"use one of {list(self.prompt_styles)}")
        if self.privileged_modes:
            require(privileged in self.privileged_modes, owner, "privileged", privileged,
                    f"use one of {list(self.privileged_modes)}")
        self.max_turns = max_turns
        self.invalid_action_penalty = invalid_action_penalty
        self.prompt_style = prompt_style
        self.privileged = privileged
        self.turns = 0
        self.done = False
        self.started = False
        self.final: dict[str, Any] = {"won": False, "score": 0.0}

    # ------------------------------------------------------------------ the template
    def reset(self, task: Task) -> str:
        """Start an episode on ``task``; returns the first observation."""
        observation = self.start(task)
        self.turns, self.done, self.started = 0, False, True
        self.final = {"won": False, "score": 0.0}
        return observation

    def step(self, action: str | None) -> StepResult:
        """Apply a parsed action (``None`` = unparseable output); the episode ends when the environment says so or
        at ``max_turns``. After the end every call is an invalid no-op that repeats the outcome."""
        if not self.started:
            raise RuntimeError(f"{type(self).__name__}.step: call reset(task) first")
        if self.done:
            return StepResult(self.observation_after_end(), 0.0, True, {"valid_action": False, **self.final})
        self.turns += 1
        result = self.transition(action)
        done = bool(result.done or self.turns >= self.max_turns)
        info = {**result.info, "turns": self.turns}
        if done:
            self.done = True
            self.final = {"won": bool(info.get("won", False)), "score": float(info.get("score", 0.0))}
        return StepResult(result.observation, result.reward, done, info)

    @abstractmethod
    def start(self, task: Task) -> str:
        """Begin an episode on ``task`` (the environment's own state); returns the first observation."""

    @abstractmethod
    def transition(self, action: str | None) -> StepResult:
        """One action's effect on the environment's state: observation, reward, whether the task ended (the horizon
        is the template's business), and ``info`` with ``valid_action`` (and ``won`` / ``score`` when it ends).
        Invalid actions leave the state unchanged."""

    def observation_after_end(self) -> str:
        """What a step after the episode's end shows."""
        return ""

    # ------------------------------------------------------------------ the environment's own parts
    @abstractmethod
    def task_panel(self, split: str, size: int, seed: int) -> list[Task]:
        """A fixed list of ``size`` tasks of ``split`` (``train``/``val``/``test``), a function of the seed only."""

    @property
    @abstractmethod
    def task_types(self) -> list[str]:
        """All task-type names this environment can emit, for per-type metrics."""

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

    def make_privileged_expert(self) -> Expert:
        """The expert of demonstrations whose prompt carries the privileged context (default: ``make_expert``'s);
        an environment whose expert for plain prompts acts only on what the agent sees may let this one act on what
        the privileged context reveals."""
        return self.make_expert()

    def anchor(self, observation: str) -> str:
        """The state the agent acts in, as a key: siblings whose anchors are equal at a turn stood in the same state
        (override when observations carry noise that does not change the state)."""
        return observation

    # ------------------------------------------------------------------ privileged context (the teacher's view)
    @property
    def has_privileged_context(self) -> bool:
        """Whether this environment offers privileged context (it writes ``skill_context`` / ``hint_context`` or
        overrides ``privileged_context`` itself)."""
        cls = type(self)
        return any(getattr(cls, name) is not getattr(AgentEnv, name)
                   for name in ("privileged_context", "skill_context", "hint_context"))

    def privileged_context(self, task: Task, reliable_only: bool = False) -> str:
        """Text the teacher sees before the student prompt; the student never sees it. One dispatch for every
        environment: with ``privileged == hint_mode`` the task's hint (``hint_context``), or a misleading one
        (``wrong_hint_context``) where ``hint_is_reliable`` says no, unless ``reliable_only``; otherwise the skill
        text of the task's type (``skill_context``). A simple environment may override this method instead."""
        if self.privileged == self.hint_mode:
            if reliable_only or self.hint_is_reliable(task):
                return self.hint_context(task)
            return self.wrong_hint_context(task)
        return self.skill_context(task)

    def skill_context(self, task: Task) -> str:
        """The skill text for ``task`` (general advice and its task type's skill)."""
        raise NotImplementedError(f"{type(self).__name__} offers no skill context; choose another privileged mode")

    def hint_context(self, task: Task) -> str:
        """A correct hint for ``task`` (what to do), built from the task's private payload."""
        raise NotImplementedError(f"{type(self).__name__} offers no hint context; choose another privileged mode")

    def wrong_hint_context(self, task: Task) -> str:
        """A hint for ``task`` that looks like a correct one but misleads (for ``hint_reliability`` < 1)."""
        raise NotImplementedError(f"{type(self).__name__} has no misleading hints; keep hint_reliability at 1")

    # ------------------------------------------------------------------ hints that may mislead
    def set_hint_reliability(self, hint_reliability: float, hint_seed: int) -> None:
        """Checks and stores ``hint_reliability`` (in [0, 1]) and ``hint_seed`` (environments with hints call it)."""
        owner = type(self).__name__
        require(isinstance(hint_reliability, (int, float)) and not isinstance(hint_reliability, bool)
                and 0.0 <= hint_reliability <= 1.0, owner, "hint_reliability", hint_reliability,
                "use a share in [0, 1] (1 = every hint is correct)")
        require(isinstance(hint_seed, int) and not isinstance(hint_seed, bool), owner, "hint_seed", hint_seed,
                "use an int")
        self.hint_reliability = float(hint_reliability)
        self.hint_seed = hint_seed

    @property
    def hints_may_mislead(self) -> bool:
        """Whether some tasks' privileged context is a wrong hint (``privileged == hint_mode`` and
        ``hint_reliability`` < 1)."""
        return self.privileged == self.hint_mode and self.hint_reliability < 1.0

    def hint_is_reliable(self, task: Task) -> bool:
        """Whether ``task``'s privileged hint is correct: ``hint_draw(task id, hint_seed) < hint_reliability``. Always
        true for other contexts than ``hint_mode`` (skills) and for environments without the setting."""
        if not self.hints_may_mislead:
            return True
        return hint_draw(task.task_id, self.hint_seed) < self.hint_reliability

    def true_privileged_context(self, task: Task) -> str:
        """The privileged context with a correct hint whatever ``hint_reliability`` says (warm-start demonstrations
        use it: the teacher learns to trust its hints). An environment whose hints can mislead accepts
        ``privileged_context(task, reliable_only=True)``."""
        if self.hint_is_reliable(task):
            return self.privileged_context(task)
        return self.privileged_context(task, reliable_only=True)

    def close(self) -> None:
        """Release resources (files, subprocesses)."""
