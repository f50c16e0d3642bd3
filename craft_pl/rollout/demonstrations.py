"""Expert demonstrations through the agent's own interface: the warm start's training data and the tokenizer corpus."""

from __future__ import annotations

import logging

import torch

from craft_pl.batch import Task, Turn
from craft_pl.envs.base import AgentEnv
from craft_pl.seeding import derive_seed

log = logging.getLogger(__name__)


def demonstrations(env: AgentEnv, count: int, panel_seed: int, history_length: int,
                   privileged_fraction: float = 0.0) -> list[tuple[str, str]]:
    """Expert (prompt, response) pairs on ``count`` train tasks seeded apart from RL and validation; a
    ``privileged_fraction`` of the episodes (chosen by a seeded draw) carry the privileged context."""
    tasks = env.task_panel("train", count, derive_seed(panel_seed, "demonstrations"))
    flags = None
    if privileged_fraction > 0 and env.has_privileged_context:
        draw = torch.rand(count, generator=torch.Generator().manual_seed(derive_seed(panel_seed, "privileged")))
        flags = (draw < privileged_fraction).tolist()
    demos, expert_success = collect_demonstrations(env, tasks, history_length, flags)
    log.info("expert demonstrations: %d rows, expert success %.3f", len(demos), expert_success)
    return demos


def collect_demonstrations(
    env: AgentEnv, tasks: list[Task], history_length: int, privileged: list[bool] | None = None
) -> tuple[list[tuple[str, str]], float]:
    """Expert (prompt text, response text) pairs of the *won* episodes on ``tasks``, through the agent's own
    interface (the expert sees only instruction, observation and admissible actions); and the expert's success rate.
    Episodes flagged in ``privileged`` carry the privileged context in their prompts, always with a correct hint
    (``AgentEnv.true_privileged_context``: the teacher learns to trust its hints; only RL's may mislead).
    """
    demos, wins, errors = [], 0, 0
    expert = env.make_expert()
    for index, task in enumerate(tasks):
        context = env.true_privileged_context(task) if privileged and privileged[index] else ""
        try:
            episode, won = _expert_episode(env, expert, task, history_length, context)
        except Exception as error:  # an environment or expert failure loses this episode, not the warm start
            errors += 1
            log.warning("expert episode on %s failed and is skipped: %s: %s", task.task_id, type(error).__name__, error)
            continue
        if won:
            wins += 1
            demos.extend(episode)
    if errors:
        log.warning("%d of %d expert episodes failed with an environment error", errors, len(tasks))
    return demos, wins / max(1, len(tasks))


def _expert_episode(env: AgentEnv, expert, task: Task, history_length: int,
                    context: str) -> tuple[list[tuple[str, str]], bool]:
    """One expert episode as (prompt, response) pairs, and whether it was won."""
    observation = env.reset(task)
    expert.reset(task.instruction)
    history: list[Turn] = []
    episode = []
    for turn in range(env.max_turns):
        action = expert.act(observation, list(env.admissible_actions))
        recent = history[len(history) - history_length :] if history_length else []
        parts = env.prompt(task, recent, observation, turn)
        episode.append(((context + parts.render()), env.format_response(action)))
        result = env.step(action)
        history.append(Turn(observation, action))
        observation = result.observation
        if result.done:
            return episode, bool(result.info.get("won", False))
    return episode, False
