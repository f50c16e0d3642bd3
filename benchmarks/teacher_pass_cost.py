"""Extra cost of SDAR's teacher pass: scoring time with the teacher over scoring time without, same batch.

Usage: python benchmarks/teacher_pass_cost.py [--tasks 8] [--group 4] [--repeats 3]
Collects one RL step of WebShop rollouts (B x G episodes, tiny model), then times the no-grad scoring that every
method does (old + reference log-probs) and the teacher pass SDAR adds (privileged prompt, same response ids).
Writes benchmarks/results/teacher_pass_cost.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from craft_pl.data import RolloutDataModule, rows_from_trajectories
from craft_pl.envs.webshop import WebShopEnv
from craft_pl.policy import Policy, TinyModelSpec
from craft_pl.rollout.collector import collect_demonstrations
from craft_pl.rollout.engine import SamplingParams
from craft_pl.warm_start import WarmStart


class _Trainer:
    def __init__(self, policy):
        self.lightning_module = type("Module", (), {"policy": policy})()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    env_args = {"max_turns": 8, "privileged": "hint"}
    env = WebShopEnv(**env_args)
    demos, _ = collect_demonstrations(env, env.task_panel("train", 400, 9), history_length=2)
    policy = Policy(tiny=TinyModelSpec(), max_prompt_tokens=512,
                    warm_start=WarmStart(num_demos=400, steps=60, batch_size=32, cache=False))
    policy.build([p + r for p, r in demos], demos, seed=0)
    datamodule = RolloutDataModule(env=lambda: WebShopEnv(**env_args), tasks_per_step=args.tasks,
                                   group_size=args.group)
    datamodule.trainer = _Trainer(policy)
    tasks = env.task_panel("train", args.tasks, 0)
    trajectories = datamodule.collector.run(tasks, args.group, policy, datamodule.engine, SamplingParams(),
                                            torch.Generator().manual_seed(0))
    batch = rows_from_trajectories(trajectories, env.invalid_action_penalty)

    def timed(fn) -> float:
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - started)
        return statistics.median(runs)

    without_teacher = timed(lambda: datamodule._score(batch, with_reference=True))
    teacher_only = timed(lambda: datamodule._score_teacher(batch, tasks))
    record = {
        "command": "python benchmarks/teacher_pass_cost.py",
        "rows": batch.num_rows,
        "mean_student_prompt_tokens": round(sum(map(len, batch.prompt_ids)) / batch.num_rows, 1),
        "privileged": env_args["privileged"],
        "scoring_without_teacher_s": round(without_teacher, 3),
        "teacher_pass_s": round(teacher_only, 3),
        "scoring_with_teacher_over_without": round((without_teacher + teacher_only) / without_teacher, 2),
        "torch_threads": torch.get_num_threads(),
    }
    out = Path(__file__).parent / "results" / "teacher_pass_cost.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
