"""Guess the secret number: a complete multi-turn text game behind craft_pl's ``AgentEnv`` contract.

Nothing here is part of craft_pl: the module lives in the user's own package and the YAML names it by
``class_path`` (run with ``PYTHONPATH=examples``).
"""

from __future__ import annotations

import random
import re

from craft_pl.envs.base import AgentEnv, Expert, PromptParts, StepResult, Task, Turn

ACTION = re.compile(r"\s*<think>[^<]*</think>\s*<action>\s*(\d{1,4})\s*</action>")
"""A response without its trailing whitespace and ``<|im_end|>`` (see ``parse_action``); every quantifier is
followed by a character it cannot match, so a failed match backtracks in linear time."""


RANGE = re.compile(r"it is from (\d+) to (\d+)")


def still_possible(observation: str) -> tuple[int, int]:
    """The range the feedback still allows, as every observation states it."""
    low, high = RANGE.search(observation).groups()
    return int(low), int(high)


class Explorer(Expert):
    """A valid but slow player: guesses any number the feedback still allows, uniformly (seeded). The warm start
    imitates it, so the student starts with a spread-out policy that wins often but not always; RL can find that
    guessing the middle wins more."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def reset(self, instruction: str) -> None:
        pass

    def act(self, observation: str, admissible_actions: list[str]) -> str:
        low, high = still_possible(observation)
        return str(self.rng.randint(low, high))


class Bisect(Expert):
    """Guesses the middle of what the feedback still allows: the privileged context's skill."""

    def reset(self, instruction: str) -> None:
        pass

    def act(self, observation: str, admissible_actions: list[str]) -> str:
        low, high = still_possible(observation)
        return str((low + high) // 2)


class GuessNumberEnv(AgentEnv):
    """Find a secret number in 1..N; each guess is answered "too low", "too high" or "correct" (reward 10), and
    every observation states the range still possible ("8 is too low; it is from 9 to 16")."""

    def __init__(self, max_number: int = 16, max_turns: int = 4, invalid_action_penalty: float = 0.1) -> None:
        """
        Args:
            max_number: Largest secret; tasks of type ``small`` use half of it, ``large`` all of it.
            max_turns: Guesses per episode. Bisection finds 2^k - 1 numbers in k guesses (15 of 16 in 4); guessing
                uniformly in the range still possible wins about 71% of 1..16 and 1..8 tasks in 4.
            invalid_action_penalty: Subtracted by the trainer per malformed response.
        """
        super().__init__(max_turns, invalid_action_penalty)  # checks and keeps the arguments every game has
        if not isinstance(max_number, int) or max_number < 2:
            raise ValueError(f"GuessNumberEnv: max_number={max_number!r} is invalid; use an int >= 2")
        self.max_number, self.secret, self.low, self.high = max_number, 0, 1, max_number

    def task_panel(self, split: str, size: int, seed: int) -> list[Task]:
        rng = random.Random(f"guess/{split}/{seed}")
        tasks = []
        for i in range(size):
            kind = rng.choice(["small", "large"])
            top = self.max_number // 2 if kind == "small" else self.max_number
            tasks.append(Task(f"guess/{split}/{seed}/{i}", kind, f"Find the secret number from 1 to {top}.",
                              rng.randint(1, top)))
        return tasks

    @property
    def task_types(self) -> list[str]:
        return ["small", "large"]

    def start(self, task: Task) -> str:
        self.secret = task.payload
        self.low, self.high = 1, int(task.instruction.split()[-1].rstrip("."))
        return f"no guess yet; it is from {self.low} to {self.high}"

    def transition(self, action: str | None) -> StepResult:
        """One guess (``AgentEnv.step`` counts the turns and ends the episode at ``max_turns``)."""
        if action is None:
            return StepResult(f"invalid answer; it is from {self.low} to {self.high}", 0.0, False,
                              {"valid_action": False, "won": False, "score": 0.0})
        guess = int(action)
        won = guess == self.secret
        if guess < self.secret:
            self.low = max(self.low, guess + 1)
        elif guess > self.secret:
            self.high = min(self.high, guess - 1)
        feedback = "correct" if won else (f"{guess} is too {'low' if guess < self.secret else 'high'}; "
                                          f"it is from {self.low} to {self.high}")
        return StepResult(feedback, 10.0 * won, won, {"valid_action": True, "won": won, "score": float(won)})

    @property
    def admissible_actions(self) -> list[str]:
        return ["a number"]

    def parse_action(self, text: str) -> tuple[str | None, bool]:
        if not isinstance(text, str):
            return None, False
        body = text.rstrip()  # the optional <|im_end|> and whitespace after the action: rstrip, not the regex
        if body.endswith("<|im_end|>"):
            body = body[: -len("<|im_end|>")].rstrip()
        match = ACTION.fullmatch(body)
        return (match.group(1), True) if match else (None, False)

    def prompt(self, task: Task, history: list[Turn], observation: str, step_index: int) -> PromptParts:
        past = tuple(f"{turn.observation} | guess {turn.action}\n" for turn in history)
        return PromptParts(f"{task.instruction}\n", past, f"{observation}\nAnswer <think>...</think><action>n</action>\n")

    def format_response(self, action: str) -> str:
        return f"<think>ok</think><action>{action}</action>"

    def make_expert(self) -> Expert:
        return Explorer()

    def make_privileged_expert(self) -> Expert:
        return Bisect()  # demonstrations whose prompt carries the skill follow it

    def privileged_context(self, task: Task) -> str:
        return "Skill: guess the middle of the numbers still possible; too low -> go higher, too high -> go lower.\n"
