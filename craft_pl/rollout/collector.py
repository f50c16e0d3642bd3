"""The collector: G sibling episodes per task, all environments advanced in lockstep, one generate call per turn."""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import torch

from craft_pl.batch import PromptParts, Task, Trajectory, Turn, TurnRecord, check_invalid_history, history_action
from craft_pl.envs.base import AgentEnv
from craft_pl.rollout.engine import Generation, GenerationEngine, SamplingParams
from craft_pl.rollout.env_process import ProcessEnv
from craft_pl.rollout.prompts import encode_prompt_parts, teacher_prompt
from craft_pl.rollout.watchdog import CallTimeout, Watchdog
from craft_pl.text_entry import clean

log = logging.getLogger(__name__)


def _kill(env) -> bool:
    """Kill ``env``'s worker process if it has one (``ProcessEnv``); whether it had one."""
    if not isinstance(env, ProcessEnv):
        return False
    env.kill()
    return True


def clean_parts(parts: PromptParts) -> PromptParts:
    """A prompt whose every piece is valid UTF-8 (the environment's own text: instructions, task, history)."""
    pieces = (parts.preamble, *parts.history, parts.current)
    cleaned = [clean(piece, "prompt") for piece in pieces]
    if all(new is old for new, old in zip(cleaned, pieces)):
        return parts
    return PromptParts(cleaned[0], tuple(cleaned[1:-1]), cleaned[-1])


class Collector:
    """Runs episodes for a batch of tasks with the current policy, on a pool of environments it keeps.

    Every ``reset`` and ``step`` runs under a watchdog (``craft_pl.rollout.watchdog``): a call that takes longer than
    ``env_step_timeout_s`` ends its episode as an environment error and its hung environment is replaced by a fresh
    one. A non-finite reward also ends its episode as an environment error, before it reaches any row.
    """

    def __init__(self, env_factory: Callable[[], AgentEnv], history_length: int,
                 env_step_timeout_s: float = 60.0, invalid_history: str = "placeholder") -> None:
        """
        Args:
            env_factory: Builds one environment (one per concurrent episode, kept in a pool).
            history_length: Past (observation, action) pairs shown in each prompt.
            env_step_timeout_s: Most seconds one environment ``reset`` or ``step`` may take (0 = no limit).
            invalid_history: What later prompts show for an invalid turn's action (``history_action``).
        """
        self.env_factory = env_factory
        self.history_length = history_length
        self.invalid_history = check_invalid_history(invalid_history)
        self.watchdog = Watchdog(env_step_timeout_s, name="craft-env-watchdog")
        self.pool: list[AgentEnv | None] = []
        """Environments by episode slot; ``None`` marks one given up on during a stop, rebuilt when next needed."""

    def environments(self, count: int) -> list[AgentEnv]:
        self.pool = [env if env is not None else self.env_factory() for env in self.pool]
        while len(self.pool) < count:
            self.pool.append(self.env_factory())
        return self.pool[:count]

    def _guarded(self, envs: list[AgentEnv], index: int, task: Task, call: str, *args: Any) -> Any:
        """``envs[index].<call>(*args)`` under the watchdog. A call that times out is an environment error: the hung
        instance is replaced in the pool (and closed if its call ever returns); ``CallTimeout`` propagates."""
        env = envs[index]
        try:
            return self.watchdog.call(getattr(env, call), *args, on_abandon=env.close)
        except CallTimeout as timeout:
            killed = _kill(env)  # a worker process is killed now, whatever it holds; a thread cannot be
            log.warning("environment %s timed out on %s after %g s (data.env_step_timeout_s); the episode ends as "
                        "an environment error and a fresh environment replaces the hung one%s",
                        call, task.task_id, timeout.timeout_s,
                        " (its worker process was killed)" if killed else
                        " (the hung call keeps its thread until it returns: data.env_workers=process kills it)")
            envs[index] = self.pool[index] = self.env_factory()
            raise
        except BaseException as error:
            if not isinstance(error, Exception):  # a stop (Ctrl-C, SIGTERM) left the call running: don't reuse it
                _kill(env)
                self.pool[index] = None
            raise

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
                    trajectory.privileged_context = clean(envs[index].privileged_context(task), "privileged context")
                try:
                    observations.append(clean(self._guarded(envs, index, task, "reset", task), "observation"))
                except Exception as error:  # noqa: BLE001 - an environment failure ends only its episode
                    if not isinstance(error, CallTimeout):
                        log.warning("environment reset failed on %s: %r", task.task_id, error)
                    observations.append("")
                    trajectory.env_error = trajectory.done = True
                trajectories.append(trajectory)
                histories.append([])
        max_turns = max(env.max_turns for env in envs) if envs else 0
        stop_strings = sorted({s for env in envs for s in env.stop_strings})
        for turn in range(max_turns):
            active = [i for i, t in enumerate(trajectories) if not t.done and turn < envs[i].max_turns]
            if not active:
                break
            prompts = []
            for i in active:
                history = histories[i][max(0, len(histories[i]) - self.history_length) :] if self.history_length else []
                parts = clean_parts(envs[i].prompt(trajectories[i].task, history, observations[i], turn))
                if privileged:
                    encoded = teacher_prompt(policy, parts, trajectories[i].privileged_context, sampling.max_new_tokens)
                else:
                    encoded = encode_prompt_parts(policy, parts)
                record = TurnRecord(parts, encoded.ids, [], [], False, encoded.history_dropped,
                                    envs[i].anchor(observations[i]))
                prompts.append(record)
            generations = engine.generate(policy.model, policy.tokenizer, [r.prompt_ids for r in prompts], sampling,
                                          generator, stop_strings)
            for i, record, generation in zip(active, prompts, generations):
                self._advance(envs, trajectories[i], histories[i], observations, i, record, generation, policy)
            if progress is not None:
                progress(len(active))
        return trajectories

    def _advance(self, envs: list[AgentEnv], trajectory: Trajectory, history: list[Turn], observations: list[str],
                 i: int, record: TurnRecord, generation: Generation, policy) -> None:
        record.response_ids, record.sampling_logp = generation.token_ids, generation.logprobs
        text = policy.decode(generation.token_ids)
        action, well_formed = envs[i].parse_action(text) if generation.finished else (None, False)
        try:
            result = self._guarded(envs, i, trajectory.task, "step", action if well_formed else None)
            reward = float(result.reward)
            if not math.isfinite(reward):
                raise ValueError(f"non-finite reward {reward!r}")
        except Exception as error:  # noqa: BLE001 - an environment failure ends only its episode
            if not isinstance(error, CallTimeout):
                log.warning("environment step failed on %s: %r", trajectory.task.task_id, error)
            trajectory.env_error = trajectory.done = True
            trajectory.turns.append(record)
            return
        record.valid_action = bool(well_formed and result.info.get("valid_action", True))
        trajectory.turns.append(record)
        trajectory.episode_reward += reward
        history.append(Turn(observations[i], history_action(action if well_formed else None, record.valid_action,
                                                            self.invalid_history)))
        observations[i] = clean(result.observation, "observation")
        if result.done:
            trajectory.done = True
            trajectory.won = bool(result.info.get("won", False))
            trajectory.score = float(result.info.get("score", 0.0))
