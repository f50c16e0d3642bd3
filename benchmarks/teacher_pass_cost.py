"""Extra cost of SDAR's teacher pass: scoring time with the teacher over scoring time without, same batch.

Usage: python -m benchmarks.teacher_pass_cost [--tasks 8] [--group 4] [--repeats 3]
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

from benchmarks.common import ENV_ARGS, SCORING_BATCH_SIZE, rollout_step
from craft_pl.rollout.engine import SamplingParams
from craft_pl.rollout.experience import score_logprobs, score_teacher, with_privileged_contexts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    policy, env, batch, texts, tasks = rollout_step(args.tasks, args.group)
    texts = with_privileged_contexts(texts, tasks, env)
    max_new_tokens = SamplingParams().max_new_tokens

    def timed(fn) -> float:
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - started)
        return statistics.median(runs)

    without_teacher = timed(lambda: score_logprobs(policy, batch, True, SCORING_BATCH_SIZE))
    teacher_only = timed(lambda: score_teacher(policy, batch, texts, max_new_tokens, SCORING_BATCH_SIZE))
    record = {
        "command": "python -m benchmarks.teacher_pass_cost",
        "rows": batch.num_rows,
        "mean_student_prompt_tokens": round(sum(map(len, batch.prompt_ids)) / batch.num_rows, 1),
        "privileged": ENV_ARGS["privileged"],
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
