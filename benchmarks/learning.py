"""Does RL improve on the warm start? Runs the main command (or any environment config) for several seeds and
records the result.

Usage:
    python benchmarks/learning.py [--seeds 0 1 2] [--parallel 1] [--config configs/webshop.yaml ...]
        [--name webshop_default] [--report_only] [-- extra CLI arguments]

Each seed runs ``python -m craft_pl fit --config <configs...> --seed_everything <seed>`` in its own directory under
``benchmarks/runs/<name>/seed<k>`` and the script reads its TensorBoard scalars: validation success right after the
warm start (step 0; also greedy where the environment runs that diagnostic), at the end, with privileged context
after the warm start, the valid-action ratio, the collapse diagnostics at the start and the end, the success
per task type / data source at the start and the end (with each type's episode count on the panel), and the wall
time. It writes
``benchmarks/results/<name>.json`` and ``.md``. With ``--parallel N`` the seeds run N at a time, each with
OMP_NUM_THREADS = 2 // N (oversubscribed OpenMP threads slow every process down many times over).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_record  # noqa: E402
from tests.tb import read_scalars  # noqa: E402


def per_type(scalars: dict) -> dict:
    """Success per task type / data source right after the warm start (the validation before RL) and at the end,
    with each type's episode count on the panel, from the run's TensorBoard scalars."""
    types = sorted(tag.split("/", 2)[2] for tag in scalars if tag.startswith("val/success_rate/"))
    result = {}
    for kind in types:
        curve = sorted(scalars[f"val/success_rate/{kind}"])
        episodes = sorted(scalars.get(f"val/episodes/{kind}", []))
        result[kind] = {"start": curve[0][1], "end": curve[-1][1], "curve": [(s, round(v, 4)) for s, v in curve],
                        "episodes": episodes[0][1] if episodes else None}
    return result


def signal(scalars: dict) -> dict:
    """The collapse diagnostics (docs/signal.md): ``zero_std_groups`` and friends averaged over the first and the last
    five RL steps (before any filtering), and the warm start's greedy success and pass@G."""
    summary = {}
    for name in ("zero_std_groups", "solve_all", "solve_none", "reward_std", "distinct_responses"):
        values = [value for _, value in sorted(scalars.get(f"rollout/{name}", []))]
        if values:
            summary[f"{name}_start"] = round(sum(values[:5]) / len(values[:5]), 4)
            summary[f"{name}_end"] = round(sum(values[-5:]) / len(values[-5:]), 4)
    for tag, name in (("val/success_rate_greedy", "start_greedy"), ("val/pass_at_g", "start_pass_at_g")):
        if scalars.get(tag):
            summary[name] = sorted(scalars[tag])[0][1]
    return summary


def summarise(run_dir: Path) -> dict:
    scalars = read_scalars(run_dir)
    valid = sorted(scalars.get("val/valid_action_ratio", []))
    success = sorted(scalars.get("val/success_rate", []))
    privileged = sorted(scalars.get("val/success_rate_privileged", []))
    return {
        "start": success[0][1] if success else None,
        "end": success[-1][1] if success else None,
        "curve": [(step, round(value, 4)) for step, value in success],
        "start_privileged": privileged[0][1] if privileged else None,
        "end_privileged": privileged[-1][1] if privileged else None,
        "valid_action_ratio_start_end": [valid[0][1], valid[-1][1]] if valid else None,
        "per_type": per_type(scalars),
        "train_success_first_last": [round(v, 4) for _, v in sorted(scalars.get("rollout/success_rate", []))[:: max(
            1, len(scalars.get("rollout/success_rate", [])) - 1)]],
        **signal(scalars),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--config", action="append", default=None)
    parser.add_argument("--name", default="webshop_default")
    parser.add_argument("--report_only", action="store_true",
                        help="re-read the finished runs of benchmarks/results/<name>.json and rewrite it (no training)")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    configs = args.config or ["configs/webshop.yaml"]
    threads = max(1, 2 // args.parallel)
    runs_root = ROOT / "benchmarks" / "runs" / args.name
    pending = [] if args.report_only else list(args.seeds)
    running: list[tuple[int, subprocess.Popen, float]] = []
    results = {}
    if args.report_only:  # the earlier record keeps its commands, wall times and machine; the summaries are re-read
        previous = json.loads((ROOT / "benchmarks" / "results" / f"{args.name}.json").read_text())
        configs, args.extra, args.seeds, args.parallel = (previous["configs"], previous["extra"], previous["seeds"],
                                                          previous["parallel"])
        results = {int(seed): {**run, **summarise(runs_root / f"seed{seed}")} for seed, run in previous["runs"].items()}
    while pending or running:
        while pending and len(running) < args.parallel:
            seed = pending.pop(0)
            run_dir = runs_root / f"seed{seed}"
            command = [sys.executable, "-m", "craft_pl", "fit"] + [a for c in configs for a in ("--config", c)] + [
                f"--seed_everything={seed}", f"--trainer.default_root_dir={run_dir.relative_to(ROOT)}",
                "--trainer.enable_progress_bar=false"] + args.extra
            run_dir.mkdir(parents=True, exist_ok=True)
            log = open(run_dir / "stdout.log", "w")
            env = dict(os.environ, OMP_NUM_THREADS=str(threads))
            running.append((seed, subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env),
                            time.perf_counter()))
            results[seed] = {"command": " ".join(command[1:])}
        time.sleep(2)
        for entry in list(running):
            seed, process, started = entry
            if process.poll() is not None:
                running.remove(entry)
                results[seed].update(returncode=process.returncode, wall_s=round(time.perf_counter() - started, 1))
                results[seed].update(summarise(runs_root / f"seed{seed}"))
                print(json.dumps({seed: results[seed]}), flush=True)
    gains = [r["end"] - r["start"] for r in results.values() if r.get("end") is not None]
    best_start_gains = [r["end"] - max(r["start"], r["start_greedy"]) for r in results.values()
                        if r.get("end") is not None and r.get("start_greedy") is not None]
    privileged_gaps = [r["start_privileged"] - r["start"] for r in results.values()
                       if r.get("start_privileged") is not None]
    types = sorted({kind for r in results.values() for kind in r.get("per_type", {})})
    per_type_gain = {kind: statistics.mean(r["per_type"][kind]["end"] - r["per_type"][kind]["start"]
                                           for r in results.values() if kind in r.get("per_type", {}))
                     for kind in types}
    summary = {
        "configs": configs,
        "extra": args.extra,
        "seeds": args.seeds,
        "parallel": args.parallel,
        "runs": results,
        "gain_mean": statistics.mean(gains) if gains else None,
        "gain_std": statistics.stdev(gains) if len(gains) > 1 else None,
        "gain_over_best_start_mean": statistics.mean(best_start_gains) if best_start_gains else None,
        "gain_over_best_start_std": statistics.stdev(best_start_gains) if len(best_start_gains) > 1 else None,
        "privileged_gap_mean": statistics.mean(privileged_gaps) if privileged_gaps else None,
        "per_type_gain_mean": per_type_gain,
        "machine_record": previous["machine_record"] if args.report_only else machine_record(),
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"# {args.name}", "", f"configs: {' '.join(configs)} {' '.join(args.extra)}", "",
             "| seed | val success after warm start | final val success | gain | privileged after warm start | wall s |",
             "|---|---|---|---|---|---|"]
    for seed, r in sorted(results.items()):
        gain = r["end"] - r["start"] if r.get("end") is not None else None
        lines.append(f"| {seed} | {r.get('start')} | {r.get('end')} | {gain} | {r.get('start_privileged')} | "
                     f"{r.get('wall_s')} |")
    lines += ["", f"mean gain {summary['gain_mean']}, std {summary['gain_std']}; mean privileged gap "
                  f"{summary['privileged_gap_mean']}"]
    if best_start_gains:
        lines += ["", f"gain over the better of the warm start's sampled and greedy success: mean "
                      f"{summary['gain_over_best_start_mean']}, std {summary['gain_over_best_start_std']}"]
    if types:
        lines += ["", "| task type | episodes per panel | " + " | ".join(f"seed {s} start -> end" for s in sorted(results))
                  + " | mean gain |", "|---|---|" + "---|" * len(results) + "---|"]
        for kind in types:
            cells = [f"{r['per_type'][kind]['start']:.3f} -> {r['per_type'][kind]['end']:.3f}"
                     if kind in r.get("per_type", {}) else "" for _, r in sorted(results.items())]
            episodes = next((r["per_type"][kind]["episodes"] for r in results.values() if kind in r.get("per_type", {})),
                            None)
            lines.append(f"| {kind} | {episodes} | " + " | ".join(cells) + f" | {per_type_gain[kind]:+.3f} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
