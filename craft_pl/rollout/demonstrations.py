"""Expert demonstrations through the agent's own interface: the warm start's training data and the tokenizer corpus."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import torch

from craft_pl.batch import Task, Turn, history_action
from craft_pl.envs.base import AgentEnv
from craft_pl.seeding import derive_seed
from craft_pl.text_entry import clean

log = logging.getLogger(__name__)


def demonstrations(env: AgentEnv, count: int, panel_seed: int, history_length: int,
                   privileged_fraction: float = 0.0, recovery_rate: float = 0.0,
                   recovery_run: float = 0.0, invalid_history: str = "placeholder") -> list[tuple[str, str]]:
    """Expert (prompt, response) pairs on ``count`` train tasks seeded apart from RL and validation; a
    ``privileged_fraction`` of the episodes (chosen by a seeded draw) carry the privileged context, and a
    ``recovery_rate`` of the turns execute a perturbed action, invalid ones continuing into runs with probability
    ``recovery_run`` (see ``Perturbation`` and ``collect_demonstrations``); ``invalid_history`` as the collector's."""
    tasks = env.task_panel("train", count, derive_seed(panel_seed, "demonstrations"))
    flags = None
    if privileged_fraction > 0 and env.has_privileged_context:
        draw = torch.rand(count, generator=torch.Generator().manual_seed(derive_seed(panel_seed, "privileged")))
        flags = (draw < privileged_fraction).tolist()
    noise = (Perturbation(recovery_rate, derive_seed(panel_seed, "recovery"), recovery_run)
             if recovery_rate > 0 else None)
    demos, expert_success = collect_demonstrations(env, tasks, history_length, flags, noise, invalid_history)
    log.info("expert demonstrations: %d rows, expert success %.3f%s", len(demos), expert_success,
             f", {noise.count} perturbed turns" if noise else "")
    return demos


def student_demonstrations(env: AgentEnv, count: int, panel_seed: int, history_length: int,
                           student: Callable[[str], str], invalid_history: str = "placeholder") -> list[tuple[str, str]]:
    """DAgger rows: the student (prompt text -> response text) plays ``count`` train tasks, drawn apart from the
    demonstrations' and RL's, and the expert labels every state it reaches (see ``collect_demonstrations``)."""
    tasks = env.task_panel("train", count, derive_seed(panel_seed, "student_demonstrations"))
    rows, student_success = collect_demonstrations(env, tasks, history_length, invalid_history=invalid_history,
                                                   student=student)
    log.info("student-driven demonstrations: %d rows labelled by the expert, student success %.3f", len(rows),
             student_success)
    return rows


class Perturbation:
    """DART-style noise for demonstrations: with probability ``rate`` a turn executes another action than the
    expert's, half the time a different admissible one (an off-plan state), half the time an invalid one made by
    swapping one word of an admissible action for a word of another (the near-misses a small model writes, leading
    to the environment's invalid-action reply). The recorded label stays the expert's action.

    With ``run`` > 0 an invalid perturbed turn is followed by another invalid one with probability ``run`` (runs of
    ``1 / (1 - run)`` turns on average), so that rows also show the way out of several ``Nothing happens.`` replies in
    a row: the cascade a student falls into after its first invalid command, where the history no longer says where
    it is and only the observation's admissible actions do."""

    def __init__(self, rate: float, seed: int, run: float = 0.0) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"recovery_rate={rate!r} is invalid; use a probability in [0, 1]")
        if not 0 <= run < 1:
            raise ValueError(f"recovery_run={run!r} is invalid; use a probability in [0, 1) (0 = single invalid turns)")
        self.rate = rate
        self.run = run
        self.rng = random.Random(seed)
        self.count = 0
        self.in_invalid_run = False

    def start_episode(self) -> None:
        """A run of invalid turns does not carry over into the next episode."""
        self.in_invalid_run = False

    def replace(self, expert_action: str, admissible: list[str]) -> str | None:
        """The action to execute instead of ``expert_action``, or ``None`` to execute the expert's."""
        continues_run = self.in_invalid_run and self.run > 0 and self.rng.random() < self.run  # no draw at run 0
        self.in_invalid_run = False
        if not admissible or (not continues_run and self.rng.random() >= self.rate):
            return None
        others = [a for a in admissible if a != expert_action]
        if others and not continues_run and self.rng.random() < 0.5:
            self.count += 1
            return self.rng.choice(others)
        words = sorted({word for action in admissible for word in action.split()})
        for _ in range(8):  # a few tries: most swaps give a command the environment does not admit
            template = self.rng.choice(admissible).split()
            position = self.rng.randrange(len(template))
            template[position] = self.rng.choice(words)
            candidate = " ".join(template)
            if candidate not in admissible:
                self.count += 1
                self.in_invalid_run = True
                return candidate
        return None


def collect_demonstrations(
    env: AgentEnv, tasks: list[Task], history_length: int, privileged: list[bool] | None = None,
    noise: Perturbation | None = None, invalid_history: str = "placeholder",
    student: Callable[[str], str] | None = None,
) -> tuple[list[tuple[str, str]], float]:
    """Expert (prompt text, response text) pairs of the *won* episodes on ``tasks``, through the agent's own
    interface (the expert sees only instruction, observation and admissible actions); and the expert's success rate.
    Episodes flagged in ``privileged`` carry the privileged context in their prompts, always with a correct hint
    (``AgentEnv.true_privileged_context``: the teacher learns to trust its hints; only RL's may mislead).
    With ``noise``, some turns execute a perturbed action while their row keeps the expert's label, so that later
    rows show the expert recovering from states it would never reach alone (an invalid command's reply, a detour).
    With ``student`` (prompt text -> response text), the student's own action is executed at every turn and each
    row is the state it reached labelled with the expert's action (DAgger); every episode's rows are kept, won or
    lost, since the labels are the expert's whatever the student did; the rate returned is then the student's.
    """
    demos, wins, errors = [], 0, 0
    plain_expert, privileged_expert = env.make_expert(), None
    for index, task in enumerate(tasks):
        context = env.true_privileged_context(task) if privileged and privileged[index] else ""
        if context and privileged_expert is None:
            privileged_expert = env.make_privileged_expert()
        expert = privileged_expert if context else plain_expert
        try:
            episode, won = _expert_episode(env, expert, task, history_length, context, noise, invalid_history,
                                           student)
        except Exception as error:  # an environment or expert failure loses this episode, not the warm start
            errors += 1
            log.warning("expert episode on %s failed and is skipped: %s: %s", task.task_id, type(error).__name__, error)
            continue
        wins += won
        if won or student is not None:
            demos.extend((clean(prompt, "demonstration"), clean(response, "demonstration"))
                         for prompt, response in episode)
    if errors:
        log.warning("%d of %d expert episodes failed with an environment error", errors, len(tasks))
    return demos, wins / max(1, len(tasks))


def _expert_episode(env: AgentEnv, expert, task: Task, history_length: int, context: str,
                    noise: Perturbation | None = None, invalid_history: str = "placeholder",
                    student: Callable[[str], str] | None = None) -> tuple[list[tuple[str, str]], bool]:
    """One episode as (prompt, expert response) pairs, and whether it was won: the expert acts, or, with
    ``student``, the student acts and the expert only labels."""
    observation = env.reset(task)
    expert.reset(task.instruction)
    if noise is not None:
        noise.start_episode()
    history: list[Turn] = []
    episode = []
    for turn in range(env.max_turns):
        admissible = list(env.admissible_actions)
        action = expert.act(observation, admissible)
        recent = history[max(0, len(history) - history_length) :] if history_length else []  # all, while fewer
        parts = env.prompt(task, recent, observation, turn)
        prompt = context + parts.render()
        episode.append((prompt, env.format_response(action)))
        if student is not None:
            parsed, well_formed = env.parse_action(student(prompt))
            executed = parsed if well_formed else None  # as the collector steps it: None, no parsable action
            overruled = executed != action
        else:
            executed = noise.replace(action, admissible) if noise is not None else None
            overruled = executed is not None
        result = env.step(executed if overruled else action)
        if overruled:
            valid = bool(result.info.get("valid_action", False))
            expert.overruled(action, valid)
            action = history_action(executed, valid, invalid_history)  # as the collector writes it
        history.append(Turn(observation, action))
        observation = result.observation
        if result.done:
            return episode, bool(result.info.get("won", False))
    return episode, False
