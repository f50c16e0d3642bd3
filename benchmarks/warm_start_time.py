"""Wall time of the default WebShop warm start, this tree against an earlier commit, side by side.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/warm_start_time.py [--before 7fb8ecc] [--steps 200] [--rounds 2]

Each run is ``python -m craft_pl validate --config configs/webshop.yaml`` with ``warm_start.steps`` set, an empty
warm-start cache of its own and a one-task validation panel, so its wall time is start-up + demonstrations +
tokenizer + the behaviour-cloning steps. The earlier commit is exported with ``git archive`` and run from its own
files (``PYTHONPATH``; its ``envs/`` and ``callbacks/`` linked into ``craft_pl/`` as its packaging mapped them).
Runs alternate (before, after, after, before, ...), one at a time. Two step counts (``--steps`` and twice that) give
the cost per behaviour-cloning step and the fixed cost, hence the projected default (2000 steps).
Result: ``benchmarks/results/warm_start_time.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.before import exported_tree  # noqa: E402
from benchmarks.machine import machine_record  # noqa: E402

DEFAULT_STEPS = 2000


def timed_run(tree: Path, steps: int, scratch: Path) -> float:
    """Seconds of one warm start of ``steps`` steps from an empty cache, run from ``tree``'s own files."""
    run_dir = Path(tempfile.mkdtemp(dir=scratch))
    command = [sys.executable, "-m", "craft_pl", "validate", "--config", "configs/webshop.yaml", "--seed_everything=0",
               f"--model.policy.init_args.warm_start.steps={steps}",
               f"--model.policy.init_args.warm_start.cache_dir={run_dir / 'cache'}",
               "--data.val_tasks=1", "--data.val_privileged=false", "--trainer.enable_progress_bar=false",
               f"--trainer.default_root_dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"warm start in {tree} failed:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="7fb8ecc", help="the earlier commit (default: before the speed work)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        trees = {"before": exported_tree(args.before, Path(tempfile.mkdtemp(dir=scratch))), "after": ROOT}
        seconds: dict[str, dict[int, list[float]]] = {side: {} for side in trees}
        for number in range(args.rounds):
            order = ["before", "after"] if number % 2 == 0 else ["after", "before"]
            for steps in (args.steps, 2 * args.steps):
                for side in order:
                    seconds[side].setdefault(steps, []).append(round(timed_run(trees[side], steps, scratch), 2))
                    print(f"round {number}: {side} {steps} steps {seconds[side][steps][-1]:.1f} s", flush=True)
    summary = {}
    for side, by_steps in seconds.items():
        short, long = (statistics.median(by_steps[s]) for s in (args.steps, 2 * args.steps))
        per_step = (long - short) / args.steps
        fixed = short - per_step * args.steps
        summary[side] = {"median_s": {str(s): statistics.median(v) for s, v in by_steps.items()},
                         "runs_s": {str(s): v for s, v in by_steps.items()},
                         "per_step_s": round(per_step, 4), "fixed_s": round(fixed, 1),
                         "projected_default_s": round(fixed + per_step * DEFAULT_STEPS, 1)}
    record = {
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')} python benchmarks/warm_start_time.py "
                   f"--before {args.before} --steps {args.steps} --rounds {args.rounds}",
        "before_commit": args.before,
        "what": "whole `validate` process with a fresh warm-start cache and a 1-task panel: start-up, demonstrations, "
                "tokenizer, behaviour cloning; per_step_s and fixed_s from the two step counts; projected_default_s = "
                f"fixed + {DEFAULT_STEPS} steps",
        **summary,
        "after_over_before_projected_default": round(summary["after"]["projected_default_s"]
                                                     / summary["before"]["projected_default_s"], 3),
        "after_over_before_per_step": round(summary["after"]["per_step_s"] / summary["before"]["per_step_s"], 3),
        "machine_record": machine_record(),
    }
    out = ROOT / "benchmarks" / "results" / "warm_start_time.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "machine_record"}, indent=2))


if __name__ == "__main__":
    main()
