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
    prompt_ids: list[int]
    response_ids: list[int]
    sampling_logp: list[float]
    valid_action: bool
    history_cut: bool


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


def encode_prompt_parts(policy, parts: PromptParts) -> tuple[list[int], bool]:
    """Prompt ids within the policy's budget, dropping the oldest history entries first; also whether it cut."""
    ids = policy.encode_prompt(parts.render())
    keep = len(parts.history)
    while keep > 0 and len(policy.encode_prompt(parts.render(keep_history=keep))) >= policy.max_prompt_tokens:
        keep -= 1
        ids = policy.encode_prompt(parts.render(keep_history=keep))
    return ids, keep < len(parts.history)


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
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Trajectory]:
        """``group_size`` sibling episodes of each task; trajectories ordered by (group, sibling)."""
        envs = self.environments(len(tasks) * group_size)
        trajectories = []
        observations: list[str] = []
        histories: list[list[Turn]] = []
        for group_id, task in enumerate(tasks):
            for sibling in range(group_size):
                index = group_id * group_size + sibling
                trajectory = Trajectory(task=task, group_id=group_id, trajectory_id=index)
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
            prompts, cuts = [], []
            for i in active:
                history = histories[i][len(histories[i]) - self.history_length :] if self.history_length else []
                parts = envs[i].prompt(trajectories[i].task, history, observations[i], turn)
                ids, cut = encode_prompt_parts(policy, parts)
                prompts.append(ids)
                cuts.append(cut)
            generations = engine.generate(policy.model, policy.tokenizer, prompts, sampling, generator)
            for i, prompt_ids, cut, generation in zip(active, prompts, cuts, generations):
                self._advance(envs[i], trajectories[i], histories[i], observations, i, prompt_ids, cut, generation,
                              policy)
            if progress is not None:
                progress(turn + 1, len(active))
        return trajectories

    def _advance(self, env, trajectory, history, observations, i, prompt_ids, cut, generation, policy) -> None:
        text = policy.decode(generation.token_ids)
        action, well_formed = env.parse_action(text) if generation.finished else (None, False)
        try:
            result = env.step(action if well_formed else None)
        except Exception as error:  # noqa: BLE001 - an environment failure ends only its episode
            log.warning("environment step failed on %s: %r", trajectory.task.task_id, error)
            trajectory.env_error = trajectory.done = True
            trajectory.turns.append(TurnRecord(prompt_ids, generation.token_ids, generation.logprobs, False, cut))
            return
        valid = bool(well_formed and result.info.get("valid_action", True))
        trajectory.turns.append(TurnRecord(prompt_ids, generation.token_ids, generation.logprobs, valid, cut))
        trajectory.episode_reward += float(result.reward)
        history.append(Turn(observations[i], action if valid else "invalid action"))
        observations[i] = result.observation
        if result.done:
            trajectory.done = True
            trajectory.won = bool(result.info.get("won", False))
            trajectory.score = float(result.info.get("score", 0.0))


def collect_demonstrations(env: AgentEnv, tasks: list[Task], history_length: int) -> tuple[list[tuple[str, str]], float]:
    """Expert (prompt text, response text) pairs of the *won* episodes on ``tasks``, through the agent's own
    interface (the expert sees only instruction, observation and admissible actions); and the expert's success rate.
    """
    demonstrations, wins = [], 0
    expert = env.make_expert()
    for task in tasks:
        observation = env.reset(task)
        expert.reset(task.instruction)
        history: list[Turn] = []
        episode = []
        for turn in range(env.max_turns):
            action = expert.act(observation, list(env.admissible_actions))
            recent = history[len(history) - history_length :] if history_length else []
            episode.append((env.prompt(task, recent, observation, turn).render(), env.format_response(action)))
            result = env.step(action)
            history.append(Turn(observation, action))
            observation = result.observation
            if result.done:
                if result.info.get("won", False):
                    wins += 1
                    demonstrations.extend(episode)
                break
    return demonstrations, wins / max(1, len(tasks))
