"""Shared set-up of the benchmarks: one RL step of WebShop rollouts from a briefly warm-started tiny policy."""

from __future__ import annotations

import torch

from craft_pl.data import RolloutDataModule, rows_from_trajectories
from craft_pl.envs.base import Task
from craft_pl.envs.webshop import WebShopEnv
from craft_pl.policy import Policy, TinyModelSpec
from craft_pl.rollout.batch import RolloutBatch
from craft_pl.rollout.collector import collect_demonstrations
from craft_pl.rollout.engine import SamplingParams
from craft_pl.warm_start import WarmStart

ENV_ARGS = {"max_turns": 8, "privileged": "hint"}


class _Trainer:
    """The two attributes of a Trainer that ``RolloutDataModule``'s scoring reads."""

    def __init__(self, policy: Policy) -> None:
        self.lightning_module = type("Module", (), {"policy": policy})()


def rollout_step(tasks: int = 8, group: int = 4) -> tuple[Policy, RolloutDataModule, RolloutBatch, list[Task]]:
    """A policy cloned for 60 steps on 400 demonstrations, its data module, and one step's unscored rows."""
    env = WebShopEnv(**ENV_ARGS)
    demos, _ = collect_demonstrations(env, env.task_panel("train", 400, 9), history_length=2)
    policy = Policy(tiny=TinyModelSpec(), max_prompt_tokens=512,
                    warm_start=WarmStart(num_demos=400, steps=60, batch_size=32, cache=False))
    policy.build([p + r for p, r in demos], demos, seed=0)
    datamodule = RolloutDataModule(env=lambda: WebShopEnv(**ENV_ARGS), tasks_per_step=tasks, group_size=group)
    datamodule.trainer = _Trainer(policy)
    panel = env.task_panel("train", tasks, 0)
    trajectories = datamodule.collector.run(panel, group, policy, datamodule.engine, SamplingParams(),
                                            torch.Generator().manual_seed(0))
    return policy, datamodule, rows_from_trajectories(trajectories, env.invalid_action_penalty), panel
