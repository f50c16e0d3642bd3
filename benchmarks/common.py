"""Shared set-up of the benchmarks: one RL step of WebShop rollouts from a briefly warm-started tiny policy."""

from __future__ import annotations

import torch

from craft_pl.batch import RolloutBatch, Task, TurnTexts
from craft_pl.envs.webshop import WebShopEnv
from craft_pl.model import Policy, TinyModelSpec, WarmStart
from craft_pl.rollout.collector import Collector
from craft_pl.rollout.demonstrations import collect_demonstrations
from craft_pl.rollout.engine import HFEngine, SamplingParams
from craft_pl.rollout.experience import rows_from_trajectories, score_logprobs, score_teacher, with_privileged_contexts

ENV_ARGS = {"max_turns": 8, "privileged": "hint"}
SCORING_BATCH_SIZE = 64


def rollout_step(tasks: int = 8, group: int = 4) -> tuple[Policy, WebShopEnv, RolloutBatch, TurnTexts, list[Task]]:
    """A policy cloned for 60 steps on 400 demonstrations, the environment, one step's unscored rows and their text,
    and the step's tasks."""
    env = WebShopEnv(**ENV_ARGS)
    demos, _ = collect_demonstrations(env, env.task_panel("train", 400, 9), history_length=2)
    policy = Policy(tiny=TinyModelSpec(), max_prompt_tokens=512,
                    warm_start=WarmStart(num_demos=400, steps=60, batch_size=32, cache=False))
    policy.build([p + r for p, r in demos], demos, seed=0)
    panel = env.task_panel("train", tasks, 0)
    collector = Collector(lambda: WebShopEnv(**ENV_ARGS), history_length=2)
    trajectories = collector.run(panel, group, policy, HFEngine(), SamplingParams(), torch.Generator().manual_seed(0))
    batch, texts = rows_from_trajectories(trajectories, env.invalid_action_penalty)
    return policy, env, batch, texts, panel


def score_rows(policy: Policy, env: WebShopEnv, batch: RolloutBatch, texts: TurnTexts, tasks: list[Task],
               teacher: bool = True) -> dict[str, float]:
    """Old and reference log-probs and, with ``teacher``, the teacher's (as ``ExperienceMaker.make`` does)."""
    score_logprobs(policy, batch, True, SCORING_BATCH_SIZE)
    if not teacher:
        return {}
    texts = with_privileged_contexts(texts, tasks, env)
    return score_teacher(policy, batch, texts, SamplingParams().max_new_tokens, SCORING_BATCH_SIZE)
