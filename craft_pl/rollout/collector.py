"""The collector: G sibling episodes per task, all environments advanced in lockstep, one generate call per turn."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import torch

from craft_pl.envs.base import AgentEnv, PromptParts, Task, Turn
from craft_pl.rollout.engine import GenerationEngine, SamplingParams

log = logging.getLogger(__name__)


@dataclass
class TurnRecord:
    prompt_parts: PromptParts
    prompt_ids: list[int]
    response_ids: list[int]
    sampling_logp: list[float]
    valid_action: bool
    history_dropped: int
    """Oldest history entries left out of the student prompt to fit its budget."""


@dataclass
class Trajectory:
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


def with_privileged_context(privileged_context: str, parts: PromptParts) -> PromptParts:
    """The teacher's view of a prompt: the privileged text, then the student's prompt unchanged."""
    return PromptParts(privileged_context + parts.preamble, parts.history, parts.current)


@dataclass
class EncodedPrompt:
    ids: list[int]
    history_dropped: int
    """Oldest history entries left out to fit the budget."""
    cut: bool
    """Whether the prompt was still too long without history and lost tokens from its start."""


def encode_prompt_parts(policy, parts: PromptParts, budget: int | None = None) -> EncodedPrompt:
    """Prompt ids within ``budget`` tokens (default: the policy's prompt budget), dropping the oldest history
    entries first and cutting from the left only when no history is left."""
    budget = budget or policy.max_prompt_tokens
    keep = len(parts.history)
    ids = policy.encode_prompt(parts.render(), budget=10**9)
    while len(ids) > budget and keep > 0:
        keep -= 1
        ids = policy.encode_prompt(parts.render(keep_history=keep), budget=10**9)
    return EncodedPrompt(ids[-budget:], len(parts.history) - keep, len(ids) > budget)


class Collector:
    """Runs episodes for a batch of tasks with the current policy."""

    def __init__(self, env_factory: Callable[[], AgentEnv], history_length: int) -> None:
        self.env_factory = env_factory
        self.history_length = history_length
        self.pool: list[AgentEnv] = []

    def environments(self, count: int) -> list[AgentEnv]:
        while len(self.pool) < count:
            self.pool.append(self.env_factory())
        return self.pool[:count]

    def run(
        self,
        tasks: list[Task],
        group_size: int,
        policy,
        engine: GenerationEngine,
        sampling: SamplingParams,
        generator: torch.Generator,
        privileged: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> list[Trajectory]:
        """``group_size`` sibling episodes of each task; trajectories ordered by (group, sibling).

        With ``privileged`` the policy itself sees the privileged context before every prompt (used to measure how
        much the teacher's context helps; training rows never come from such episodes). ``progress`` is called
        after every turn with the number of episodes that were still running.
        """
        envs = self.environments(len(tasks) * group_size)
        trajectories = []
        observations: list[str] = []
        histories: list[list[Turn]] = []
        for group_id, task in enumerate(tasks):
            for sibling in range(group_size):
                index = group_id * group_size + sibling
                trajectory = Trajectory(task=task, group_id=group_id, trajectory_id=index)
                if privileged:
                    trajectory.privileged_context = envs[index].privileged_context(task)
                try:
                    observations.append(envs[index].reset(task))
                except Exception as error:  # noqa: BLE001 - an environment failure ends only its episode
                    log.warning("environment reset failed on %s: %r", task.task_id, error)
                    observations.append("")
                    trajectory.env_error = trajectory.done = True
                trajectories.append(trajectory)
                histories.append([])
        max_turns = max(env.max_turns for env in envs) if envs else 0
        for turn in range(max_turns):
            active = [i for i, t in enumerate(trajectories) if not t.done and turn < envs[i].max_turns]
            if not active:
                break
            prompts, dropped = [], []
            for i in active:
                history = histories[i][len(histories[i]) - self.history_length :] if self.history_length else []
                parts = envs[i].prompt(trajectories[i].task, history, observations[i], turn)
                if privileged:
                    parts = with_privileged_context(trajectories[i].privileged_context, parts)
                encoded = encode_prompt_parts(policy, parts, teacher_budget(policy, sampling) if privileged else None)
                prompts.append((parts, encoded.ids))
                dropped.append(encoded.history_dropped)
            generations = engine.generate(policy.model, policy.tokenizer, [ids for _, ids in prompts], sampling,
                                          generator)
            for i, prompt, history_dropped, generation in zip(active, prompts, dropped, generations):
                self._advance(envs[i], trajectories[i], histories[i], observations, i, prompt, history_dropped,
                              generation, policy)
            if progress is not None:
                progress(len(active))
        return trajectories

    def _advance(self, env, trajectory, history, observations, i, prompt, history_dropped, generation, policy) -> None:
        parts, prompt_ids = prompt
        text = policy.decode(generation.token_ids)
        action, well_formed = env.parse_action(text) if generation.finished else (None, False)
        try:
            result = env.step(action if well_formed else None)
        except Exception as error:  # noqa: BLE001 - an environment failure ends only its episode
            log.warning("environment step failed on %s: %r", trajectory.task.task_id, error)
            trajectory.env_error = trajectory.done = True
            trajectory.turns.append(TurnRecord(parts, prompt_ids, generation.token_ids, generation.logprobs, False,
                                               history_dropped))
            return
        valid = bool(well_formed and result.info.get("valid_action", True))
        trajectory.turns.append(TurnRecord(parts, prompt_ids, generation.token_ids, generation.logprobs, valid,
                                           history_dropped))
        trajectory.episode_reward += float(result.reward)
        history.append(Turn(observations[i], action if valid else "invalid action"))
        observations[i] = result.observation
        if result.done:
            trajectory.done = True
            trajectory.won = bool(result.info.get("won", False))
            trajectory.score = float(result.info.get("score", 0.0))


def teacher_budget(policy, sampling: SamplingParams) -> int:
    """Token budget of a privileged prompt: what the model's context leaves after the response."""
    return max(policy.max_prompt_tokens, policy.max_context_tokens - sampling.max_new_tokens)


def collect_demonstrations(
    env: AgentEnv, tasks: list[Task], history_length: int, privileged: list[bool] | None = None
) -> tuple[list[tuple[str, str]], float]:
    """Expert (prompt text, response text) pairs of the *won* episodes on ``tasks``, through the agent's own
    interface (the expert sees only instruction, observation and admissible actions); and the expert's success rate.
    Episodes flagged in ``privileged`` carry the privileged context in their prompts.
    """
    demonstrations, wins, errors = [], 0, 0
    expert = env.make_expert()
    for index, task in enumerate(tasks):
        context = env.privileged_context(task) if privileged and privileged[index] else ""
        try:
            episode, won = _expert_episode(env, expert, task, history_length, context)
        except Exception as error:  # an environment or expert failure loses this episode, not the warm start
            errors += 1
            log.warning("expert episode on %s failed and is skipped: %s: %s", task.task_id, type(error).__name__, error)
            continue
        if won:
            wins += 1
            demonstrations.extend(episode)
    if errors:
        log.warning("%d of %d expert episodes failed with an environment error", errors, len(tasks))
    return demonstrations, wins / max(1, len(tasks))


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
