"""Rollout generation throughput: one batched call for all B x G environments vs one call per environment.

Usage: python benchmarks/generation_throughput.py [--tasks 8] [--group 4] [--max-new-tokens 24] [--repeats 3]
Writes benchmarks/results/generation_throughput.json and prints a markdown row.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from craft_pl.envs.webshop import WebShopEnv
from craft_pl.model import Policy, TinyModelSpec
from craft_pl.rollout.collector import collect_demonstrations
from craft_pl.rollout.engine import HFEngine, SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    env = WebShopEnv()
    demos, _ = collect_demonstrations(env, env.task_panel("train", 300, 7), history_length=2)
    policy = Policy(tiny=TinyModelSpec(), max_prompt_tokens=512)
    policy.build([p + r for p, r in demos], None, seed=0)
    prompts = [policy.encode_prompt(p) for p, _ in demos[: args.tasks]] * args.group  # B tasks x G siblings
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    engine = HFEngine()

    def timed(fn) -> tuple[float, int]:
        started = time.perf_counter()
        generations = fn()
        return time.perf_counter() - started, sum(len(g.token_ids) for g in generations)

    def batched():
        return engine.generate(policy.model, policy.tokenizer, prompts, sampling, torch.Generator().manual_seed(0))

    def one_at_a_time():
        generator = torch.Generator().manual_seed(0)
        return [engine.generate(policy.model, policy.tokenizer, [p], sampling, generator)[0] for p in prompts]

    batched()  # warm up
    results = {}
    for name, fn in (("batched", batched), ("per_environment_loop", one_at_a_time)):
        runs = [timed(fn) for _ in range(args.repeats)]
        seconds = statistics.median(r[0] for r in runs)
        tokens = runs[0][1]
        results[name] = {"seconds": round(seconds, 3), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}
    speedup = results["batched"]["tokens_per_s"] / results["per_environment_loop"]["tokens_per_s"]
    record = {
        "command": "python benchmarks/generation_throughput.py",
        "environments": args.tasks * args.group,
        "max_new_tokens": args.max_new_tokens,
        "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "results": results,
        "speedup": round(speedup, 2),
    }
    out = Path(__file__).parent / "results" / "generation_throughput.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
