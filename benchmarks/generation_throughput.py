"""Rollout generation throughput: one batched call for all B x G environments vs one call per environment, and the
engine with shared sibling prefills vs the decoding loop before it (taken from git) on WebShop rollouts.

Usage: OMP_NUM_THREADS=1 python benchmarks/generation_throughput.py [--tasks 8] [--group 4] [--max-new-tokens 24]
       [--repeats 3] [--groups 4 8] [--rounds 4]
Writes benchmarks/results/generation_throughput.json and prints a table.

``shared_prefill``: whole WebShop rollouts (the default environment settings, up to 8 turns, 32 new tokens, the
briefly warm-started policy of ``benchmarks/common.py``) at B = 8 tasks x G siblings, once with
today's ``HFEngine`` and once with the ``HFEngine`` of ``--before`` (default: the last commit before the shared-prefill
engine, whose loop prefills every row and decodes every row to the end; ``benchmarks/before.py`` imports its
``engine.py`` from git), alternating in each round from the same seed; only the time inside ``generate`` counts.
Both engines draw the same random numbers, so the rollouts agree (``same_generations``: share of generations that
came out identical).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.before import ENGINE_BEFORE_SHARED_PREFILL, module_at  # noqa: E402
from benchmarks.common import ENV_ARGS, rollout_step  # noqa: E402
from benchmarks.machine import machine_record  # noqa: E402
from craft_pl.envs.webshop import WebShopEnv  # noqa: E402
from craft_pl.model import Policy, TinyModelSpec  # noqa: E402
from craft_pl.rollout.collector import Collector  # noqa: E402
from craft_pl.rollout.demonstrations import collect_demonstrations  # noqa: E402
from craft_pl.rollout.engine import HFEngine, SamplingParams  # noqa: E402


class TimedEngine:
    """An engine that adds up the seconds spent in ``generate`` and the tokens it returned."""

    def __init__(self, engine) -> None:
        self.engine, self.seconds, self.tokens, self.generations = engine, 0.0, 0, []

    def generate(self, *args, **kwargs):
        started = time.perf_counter()
        out = self.engine.generate(*args, **kwargs)
        self.seconds += time.perf_counter() - started
        self.tokens += sum(len(g.token_ids) for g in out)
        self.generations.extend(g.token_ids for g in out)
        return out


def batched_vs_one_at_a_time(args) -> dict:
    """The original comparison: first-turn prompts of an untrained policy, batched vs one environment at a time."""
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
    return {
        "environments": args.tasks * args.group,
        "max_new_tokens": args.max_new_tokens,
        "mean_prompt_tokens": round(sum(map(len, prompts)) / len(prompts), 1),
        "results": results,
        "speedup": round(results["batched"]["tokens_per_s"] / results["per_environment_loop"]["tokens_per_s"], 2),
    }


def shared_prefill_vs_previous(policy: Policy, tasks: int, groups: list[int], rounds: int, before: str) -> dict:
    """Tokens per second of whole WebShop rollouts, shared prefills vs the loop of commit ``before``, alternating."""
    previous_engine = module_at(before, "craft_pl/rollout/engine.py").HFEngine
    env = WebShopEnv(**ENV_ARGS)
    panel = env.task_panel("train", tasks, 0)
    collector = Collector(lambda: WebShopEnv(**ENV_ARGS), history_length=2)
    record = {}
    for group in groups:
        speeds: dict[str, list[float]] = {"shared_prefill": [], "previous_loop": []}
        same, compared = 0, 0
        for number in range(rounds):
            order = ["shared_prefill", "previous_loop"][:: 1 if number % 2 == 0 else -1]
            engines = {}
            for name in order:
                engines[name] = TimedEngine(HFEngine() if name == "shared_prefill" else previous_engine())
                collector.run(panel, group, policy, engines[name], SamplingParams(),
                              torch.Generator().manual_seed(number))
                speeds[name].append(engines[name].tokens / engines[name].seconds)
            pairs = list(zip(engines["shared_prefill"].generations, engines["previous_loop"].generations))
            same += sum(a == b for a, b in pairs)
            compared += len(pairs)
        ratios = [a / b for a, b in zip(speeds["shared_prefill"], speeds["previous_loop"])]
        record[f"B{tasks}xG{group}"] = {
            "shared_prefill_tokens_per_s": round(statistics.median(speeds["shared_prefill"]), 1),
            "previous_loop_tokens_per_s": round(statistics.median(speeds["previous_loop"]), 1),
            "speedup": round(statistics.median(ratios), 2),
            "speedup_per_round": [round(r, 2) for r in ratios],
            "same_generations": round(same / max(1, compared), 4),
        }
        print(f"B={tasks} G={group}: shared prefill {record[f'B{tasks}xG{group}']['shared_prefill_tokens_per_s']} "
              f"tok/s, previous loop {record[f'B{tasks}xG{group}']['previous_loop_tokens_per_s']} tok/s, speedup "
              f"{record[f'B{tasks}xG{group}']['speedup']}", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--groups", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--before", default=ENGINE_BEFORE_SHARED_PREFILL,
                        help="the commit whose engine.py is the previous loop")
    args = parser.parse_args()

    torch.set_num_threads(1)
    record = {
        "command": "OMP_NUM_THREADS=1 python benchmarks/generation_throughput.py",
        **batched_vs_one_at_a_time(args),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    policy = rollout_step(args.tasks, 4)[0]  # the briefly warm-started WebShop policy
    record["shared_prefill"] = {
        "what": "whole WebShop rollouts (default env settings, 32 new tokens), time inside generate only; "
                f"today's HFEngine vs the HFEngine of commit {args.before} (the previous loop), alternating per round",
        "rounds": args.rounds,
        "before": args.before,
        **shared_prefill_vs_previous(policy, args.tasks, args.groups, args.rounds, args.before),
    }
    record["machine_record"] = machine_record()
    out = Path(__file__).parent / "results" / "generation_throughput.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
