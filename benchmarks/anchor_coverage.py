"""How often do siblings stand in the same state? Per-turn anchor coverage of the warm-started policy's rollouts.

Usage:
    OMP_NUM_THREADS=1 python -m benchmarks.anchor_coverage [--configs configs/webshop.yaml configs/alfworld.yaml]
        [--steps 4] [--group_size 8] [--seed 0]

For each environment config: build the run as ``fit`` would (the warm start comes from the cache when there is one),
then make ``--steps`` RL steps of experience with the warm-started policy (no update) and report, per turn t, the
share of rows with at least one same-state sibling (same group, same turn, same anchor) and the mean number of
distinct states per group. Same-state credit (GiGPO's step term, Pillar 1 with ``grouping: anchor``) can only act
on the covered rows. Results: ``benchmarks/results/anchor_coverage.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from craft_pl.cli import main as cli_main
from craft_pl.rollout.engine import SamplingParams

ROOT = Path(__file__).resolve().parent.parent


def coverage_by_turn(batches) -> list[dict]:
    """Per turn: rows, share of rows with a same-state sibling, mean distinct states per (group, turn)."""
    rows, covered, states = defaultdict(int), defaultdict(int), defaultdict(set)
    for step, batch in enumerate(batches):
        sizes = torch.bincount(batch.anchor_ids)
        for group, turn, anchor in zip(batch.group_ids.tolist(), batch.turn_index.tolist(), batch.anchor_ids.tolist()):
            rows[turn] += 1
            covered[turn] += int(sizes[anchor] > 1)
            states[turn].add((step, group, anchor))
    table = []
    for turn in sorted(rows):
        groups = {(s, g) for s, g, _ in states[turn]}
        table.append({"turn": turn, "rows": rows[turn], "covered_share": round(covered[turn] / rows[turn], 3),
                      "states_per_group": round(len(states[turn]) / len(groups), 2)})
    return table


def measure(config: str, steps: int, group_size: int, seed: int, extra: list[str]) -> dict:
    cli = cli_main(["--config", config, *extra, f"--seed_everything={seed}", f"--data.group_size={group_size}",
                    "--trainer.enable_progress_bar=false"], run=False)
    module, data = cli.model, cli.datamodule
    started = time.time()
    module.build_policy(module.data_facts)
    data.setup("fit")
    sampling = SamplingParams(data.temperature, data.top_p, data.max_new_tokens)
    batches = []
    for _ in range(steps):
        tasks = data._sample_tasks()
        experience = data.experience.make(module.policy, tasks, data.group_size, sampling,
                                          data.generators.torch["rollout"], module.loss_recipe, data.environment)
        batches.append(experience.batch)
    return {"config": config, "group_size": group_size, "tasks_per_step": data.tasks_per_step, "steps": steps,
            "seed": seed, "wall_s": round(time.time() - started, 1), "by_turn": coverage_by_turn(batches)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["configs/webshop.yaml", "configs/alfworld.yaml"])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--group_size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra", nargs="*", default=[], help="more CLI arguments for every run (e.g. --config X)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = [measure(config, args.steps, args.group_size, args.seed, args.extra) for config in args.configs]
    for result in results:
        print(result["config"], "G =", result["group_size"])
        for row in result["by_turn"]:
            print(f"  t={row['turn']}: rows {row['rows']:4d}  covered {row['covered_share']:.3f}  "
                  f"states/group {row['states_per_group']:.2f}")
    command = "OMP_NUM_THREADS=1 python -m benchmarks.anchor_coverage " + " ".join(
        ["--configs", *args.configs, "--steps", str(args.steps), "--group_size", str(args.group_size),
         "--seed", str(args.seed), *(["--extra", *args.extra] if args.extra else [])])
    out = ROOT / "benchmarks" / "results" / "anchor_coverage.json"
    out.write_text(json.dumps({"command": command, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
