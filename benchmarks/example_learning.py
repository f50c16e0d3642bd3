"""Does ``examples/guess_number`` learn? Its documented command on several seeds: validation success after the warm
start (the validation before RL) and after the last RL step, the gain per seed, and whether the mean gain is more
than twice its standard deviation over seeds.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/example_learning.py [--seeds 0 1 2] [--jobs 2]

Each seed runs ``PYTHONPATH=examples python -m craft_pl fit --config examples/guess_number/config.yaml --config
configs/method/grpo.yaml --seed_everything=<seed>`` with an empty warm-start cache of its own (``--jobs`` at a time,
each with ``OMP_NUM_THREADS=1``) and reads the run's reports (``evaluation/val_step0.json`` and the last one).
Result: ``benchmarks/results/guess_number_learning.json`` (with the machine record).
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

from benchmarks.machine import machine_record  # noqa: E402

COMMAND = ["-m", "craft_pl", "fit", "--config", "examples/guess_number/config.yaml", "--config",
           "configs/method/grpo.yaml"]


def start(seed: int, scratch: str) -> tuple[subprocess.Popen, Path, float]:
    root = Path(scratch) / f"seed{seed}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples"), "CRAFT_PL_CACHE": f"{scratch}/cache{seed}",
           "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, *COMMAND, f"--seed_everything={seed}",
                                f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return process, root, time.perf_counter()


def outcome(seed: int, root: Path, seconds: float) -> dict:
    reports = {int(p.stem.removeprefix("val_step")): json.loads(p.read_text()) for p in root.rglob("val_step*.json")}
    curve = [(r["rl_step"], r["metrics"]["val/success_rate"]) for _, r in sorted(reports.items())]
    before, after = curve[0][1], curve[-1][1]
    return {"seed": seed, "warm_start": before, "final": after, "gain": round(after - before, 4), "curve": curve,
            "wall_s": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    runs, pending = [], list(args.seeds)
    with tempfile.TemporaryDirectory() as scratch:
        active: list[tuple[int, subprocess.Popen, Path, float]] = []
        while pending or active:
            while pending and len(active) < args.jobs:
                seed = pending.pop(0)
                active.append((seed, *start(seed, scratch)))
            time.sleep(2)
            for item in [a for a in active if a[1].poll() is not None]:
                active.remove(item)
                seed, process, root, started = item
                if process.returncode:
                    raise RuntimeError(f"seed {seed} failed ({process.returncode}): {process.stderr.read()[-2000:]}")
                runs.append(outcome(seed, root, time.perf_counter() - started))
                print(json.dumps(runs[-1]), flush=True)
    gains = [run["gain"] for run in sorted(runs, key=lambda r: r["seed"])]
    mean, sd = statistics.mean(gains), statistics.stdev(gains) if len(gains) > 1 else 0.0
    result = {"command": "PYTHONPATH=examples python " + " ".join(COMMAND) + " --seed_everything=<seed>",
              "benchmark": "OMP_NUM_THREADS=1 python benchmarks/example_learning.py --seeds "
                           + " ".join(map(str, args.seeds)) + f" --jobs {args.jobs}",
              "seeds": args.seeds, "runs": sorted(runs, key=lambda r: r["seed"]),
              "mean_gain": round(mean, 4), "sd_gain": round(sd, 4), "learns": mean > 2 * sd,
              "machine": machine_record()}
    (ROOT / "benchmarks" / "results" / "guess_number_learning.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"gain {mean:+.3f} (sd {sd:.3f} over {len(gains)} seeds): "
          + ("learns" if mean > 2 * sd else "does not learn by the rule mean > 2 sd"))


if __name__ == "__main__":
    main()
