"""Seconds from SIGTERM or SIGINT (Ctrl-C) to the end of a ``fit`` process, during the warm start and during RL.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/signal_exit.py [--repeats 2]

Each run is ``python -m craft_pl fit --config configs/webshop.yaml --config configs/smoke.yaml`` with its output in a
pipe (as in a log file). ``warm_start``: an empty warm-start cache and 2000 behaviour-cloning steps; the signal comes
2 s after the line ``warm start: behaviour cloning ...``. ``rl_step``: a cached warm start and 50 RL steps; the
signal comes 3 s after the validation before RL, inside an RL step. The time is from ``os.kill`` to the process's
exit (``wait``), with its exit status. Result: ``benchmarks/results/signal_exit.json`` (with the machine record).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_record  # noqa: E402

PHASES = {"warm_start": ("warm start: behaviour cloning", 2.0, ["--model.policy.warm_start.steps=2000"]),
          "rl_step": ("validation before RL", 3.0, ["--trainer.max_epochs=50"])}


def one_run(phase: str, signal_name: str, cache: str, root: str) -> dict:
    marker, delay, extra = PHASES[phase]
    command = [sys.executable, "-m", "craft_pl", "fit", "--config", "configs/webshop.yaml", "--config",
               "configs/smoke.yaml", f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
               *extra]
    env = {**os.environ, "CRAFT_PL_CACHE": cache, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not seen.wait(600):
        process.kill()
        raise RuntimeError(f"{marker!r} never appeared:\n{''.join(lines[-20:])}")
    time.sleep(delay)
    sent = time.perf_counter()
    process.send_signal(getattr(signal, signal_name))
    code = process.wait(timeout=300)
    seconds = time.perf_counter() - sent
    reader.join(timeout=10)
    last = [line.strip() for line in lines if "stopped" in line or "interrupted" in line][-3:]
    return {"phase": phase, "signal": signal_name, "exit_s": round(seconds, 2), "exit_status": code, "said": last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        warm_cache = f"{scratch}/warm"
        subprocess.run([sys.executable, "-m", "craft_pl", "fit", "--config", "configs/webshop.yaml", "--config",
                        "configs/smoke.yaml", f"--trainer.default_root_dir={scratch}/fill", "--trainer.max_epochs=1",
                        "--trainer.enable_progress_bar=false"], cwd=ROOT, check=True, capture_output=True,
                       env={**os.environ, "CRAFT_PL_CACHE": warm_cache})
        for repeat in range(args.repeats):
            for phase in PHASES:
                for signal_name in ("SIGTERM", "SIGINT"):
                    cache = warm_cache if phase == "rl_step" else f"{scratch}/cold{repeat}{signal_name}"
                    run = one_run(phase, signal_name, cache, f"{scratch}/{phase}{repeat}{signal_name}")
                    print(json.dumps(run), flush=True)
                    runs.append(run)
    summary = {f"{p}/{s}": {"mean_s": round(statistics.mean(r["exit_s"] for r in runs if (r["phase"], r["signal"])
                                                              == (p, s)), 2),
                            "max_s": max(r["exit_s"] for r in runs if (r["phase"], r["signal"]) == (p, s))}
               for p in PHASES for s in ("SIGTERM", "SIGINT")}
    result = {"command": "OMP_NUM_THREADS=1 python benchmarks/signal_exit.py --repeats " + str(args.repeats),
              "summary": summary, "runs": runs, "machine": machine_record()}
    out = ROOT / "benchmarks" / "results" / "signal_exit.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
