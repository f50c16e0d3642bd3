"""Is the privileged teacher worth distilling from? The warm-started policy evaluated without and with privileged
context, on the default WebShop config, for several seeds.

Usage:
    python benchmarks/privileged_teacher.py [--seeds 0 1 2] [--name privileged_teacher] [--jobs 2] [-- extra CLI arguments]

Each seed runs ``python -m craft_pl validate --config configs/webshop.yaml --seed_everything <seed>`` (the warm
start, then the validation panel: 128 tasks x 2 samples at T = 0.4, once plain and once with the privileged hint) and
reads the report it writes (``<log dir>/evaluation/val_step0.json``). Results: ``benchmarks/results/<name>.{json,md}``,
with what a rerun needs to reproduce them: ``pip freeze``, torch's CPU kernel family
(``torch.backends.cpu.get_cpu_capability()``: the warm start's weights depend on it) and the CPU model.
``--jobs 2`` runs two seeds at a time with one thread each (``OMP_NUM_THREADS=1``; the weights do not depend on the
thread count); point ``CRAFT_PL_CACHE`` at an empty folder to measure fresh warm starts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_record  # noqa: E402


def run_seed(seed: int, name: str, extra: list[str], threads: int | None) -> dict:
    directory = ROOT / "benchmarks" / "runs" / name / f"seed{seed}"
    command = [sys.executable, "-m", "craft_pl", "validate", "--config", "configs/webshop.yaml",
               f"--seed_everything={seed}", f"--trainer.default_root_dir={directory}",
               "--trainer.enable_progress_bar=false", "--data.val_privileged=true", *extra]
    started = time.time()
    directory.mkdir(parents=True, exist_ok=True)
    environment = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    with open(directory / "stdout.log", "w") as log:
        subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True, env=environment)
    (report,) = sorted(directory.rglob("evaluation/val_step0.json"), key=lambda p: p.stat().st_mtime)[-1:]
    metrics = json.loads(report.read_text())["metrics"]
    return {"seed": seed, "student": metrics["val/success_rate"], "teacher": metrics["val/success_rate_privileged"],
            "gap": metrics["val/success_rate_privileged"] - metrics["val/success_rate"],
            "wall_s": round(time.time() - started, 1), "omp_num_threads": environment.get("OMP_NUM_THREADS"),
            "command": "python -m craft_pl " + " ".join(command[3:]).replace(str(ROOT) + "/", "")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--name", default="privileged_teacher")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once (one thread each when > 1)")
    parser.add_argument("extra", nargs="*", help="extra CLI arguments after --")
    args = parser.parse_args()
    threads = 1 if args.jobs > 1 else None
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda seed: run_seed(seed, args.name, args.extra, threads), args.seeds))
    gaps = [row["gap"] for row in rows]
    summary = {"rows": rows, "mean_gap": statistics.mean(gaps),
               "std_gap": statistics.stdev(gaps) if len(gaps) > 1 else None, "min_gap": min(gaps),
               "extra_args": args.extra, **machine_record()}
    out = ROOT / "benchmarks" / "results"
    (out / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# {args.name}", "", "val/success_rate after the warm start (128 tasks x 2 samples, T = 0.4): the student "
             "(plain prompt) and the same weights shown the privileged hint (the teacher's view).", "",
             "| seed | student | teacher (privileged) | gap | wall s |", "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['student']:.3f} | {r['teacher']:.3f} | {r['gap']:+.3f} | {r['wall_s']} |" for r in rows]
    lines += ["", f"mean gap {summary['mean_gap']:+.3f}" + (f" (std {summary['std_gap']:.3f})" if summary["std_gap"] else ""),
              "", f"command (per seed): `{rows[0]['command']}`"]
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
