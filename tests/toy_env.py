"""A tiny deterministic environment for framework tests: pick the word the instruction names."""

from __future__ import annotations

import random
import re

from craft_pl.envs.base import AgentEnv, Expert, PromptParts, StepResult, Task, Turn

WORDS = ["apple", "brick", "cloud", "delta", "ember", "frost", "grape", "heron"]
ACTION = re.compile(r"<think>.*?</think>\s*<action>(.*?)</action>", re.S)


class PickExpert(Expert):
    def reset(self, instruction: str) -> None:
        self.target = instruction.split()[-1]

    def act(self, observation: str, admissible_actions: list[str]) -> str:
        return self.target if self.target in admissible_actions else admissible_actions[0]


class PickWordEnv(AgentEnv):
    """Each task names a word; choosing it within ``max_turns`` wins (reward 10)."""

    def __init__(self, max_turns: int = 2, invalid_action_penalty: float = 0.1, fail_on: str | None = None) -> None:
        """
        Args:
            max_turns: Turns per episode.
            invalid_action_penalty: Penalty per invalid action.
            fail_on: Raise inside ``step`` when this word is chosen (to test error handling).
        """
        super().__init__(max_turns, invalid_action_penalty)
        self.fail_on = fail_on
        self.task: Task | None = None

    def task_panel(self, split: str, size: int, seed: int) -> list[Task]:
        rng = random.Random(f"{split}/{seed}")
        return [
            Task(f"pick/{split}/{i}", "even" if i % 2 == 0 else "odd", f"choose {word}", payload=word)
            for i, word in enumerate(rng.choice(WORDS) for _ in range(size))
        ]

    @property
    def task_types(self) -> list[str]:
        return ["even", "odd"]

    def start(self, task: Task) -> str:
        self.task = task
        return "options: " + " ".join(WORDS)

    def transition(self, action: str | None) -> StepResult:
        if action is None or action not in WORDS:
            return StepResult("options: " + " ".join(WORDS), 0.0, False, {"valid_action": False})
        if action == self.fail_on:
            raise RuntimeError("simulated environment failure")
        won = action == self.task.payload
        return StepResult("done", 10.0 * won, True, {"valid_action": True, "won": won, "score": float(won)})

    @property
    def admissible_actions(self) -> list[str]:
        return list(WORDS)

    def parse_action(self, text: str) -> tuple[str | None, bool]:
        match = ACTION.search(text)
        if not match:
            return None, False
        return match.group(1).strip(), True

    def prompt(self, task: Task, history: list[Turn], observation: str, step_index: int) -> PromptParts:
        return PromptParts(
            preamble=f"Task: {task.instruction}\n",
            history=tuple(f"[{turn.action}]\n" for turn in history),
            current=f"Observation: {observation}\n",
        )

    def format_response(self, action: str) -> str:
        return f"<think>ok</think><action>{action}</action>"

    def make_expert(self) -> Expert:
        return PickExpert()

    def privileged_context(self, task: Task) -> str:
        return f"Hint: the answer is {task.payload}.\n"


class NoHintEnv(PickWordEnv):
    """``PickWordEnv`` without privileged context (no teacher for the self-distillation methods)."""

    privileged_context = AgentEnv.privileged_context
