"""One seed of the privileged-teacher measurement with a chosen cache and extra CLI overrides (investigation helper).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/teacher_gap_run.py --seed 0 --name base --cache <empty folder> [-- extra CLI args]

Runs ``python -m craft_pl validate --config configs/webshop.yaml --seed_everything=<seed> --data.val_privileged=true``
(or a scratch entry point given by --entry) with ``CRAFT_PL_CACHE=<cache>``, logs under <--out>/<name>/seed<seed> (default benchmarks/runs/teacher_gap),
and appends one JSON line (seed, student, teacher, gap, wall_s, warm-start wall time, extra args) to
<--out>/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--entry", default="-m craft_pl", help="python entry: '-m craft_pl' or a script path")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "runs" / "teacher_gap"))
    parser.add_argument("--root", default=str(ROOT), help="source tree to run (cwd and PYTHONPATH), e.g. a git archive")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    directory = Path(args.out) / args.name / f"seed{args.seed}"
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, *args.entry.split(), "validate", "--config", "configs/webshop.yaml",
               f"--seed_everything={args.seed}", f"--trainer.default_root_dir={directory}",
               "--trainer.enable_progress_bar=false", "--data.val_privileged=true", *args.extra]
    env = dict(os.environ, CRAFT_PL_CACHE=args.cache)
    if args.root != str(ROOT):
        env["PYTHONPATH"] = args.root
    started = time.time()
    with open(directory / "stdout.log", "w") as log:
        log.write(f"# {time.strftime('%H:%M:%S')} cwd={args.root} {' '.join(command)}\n# CRAFT_PL_CACHE={args.cache} "
                  f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}\n")
        log.flush()
        subprocess.run(command, cwd=args.root, stdout=log, stderr=subprocess.STDOUT, check=True, env=env)
    wall = time.time() - started
    (report,) = sorted(directory.rglob("evaluation/val_step0.json"), key=lambda p: p.stat().st_mtime)[-1:]
    metrics = json.loads(report.read_text())["metrics"]
    row = {"name": args.name, "seed": args.seed, "student": metrics["val/success_rate"],
           "teacher": metrics["val/success_rate_privileged"],
           "gap": metrics["val/success_rate_privileged"] - metrics["val/success_rate"], "wall_s": round(wall, 1),
           "omp": os.environ.get("OMP_NUM_THREADS"), "cache": args.cache, "extra": args.extra,
           "entry": args.entry, "root": args.root, "finished": time.strftime("%H:%M:%S")}
    with open(Path(args.out) / "results.jsonl", "a") as out:
        out.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
