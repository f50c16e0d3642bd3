"""The lever table of ``configs/campaigns/signal_levers_webshop.yaml``: per lever (one run each, screening seed),
what the warm start leaves RL to work with and what 20 RL steps did with it, read from each run's TensorBoard log.

Usage: python benchmarks/signal_levers.py [--campaign configs/campaigns/signal_levers_webshop.yaml]
Writes benchmarks/results/signal_levers.json and .md (with the machine record).

Columns: student success before RL at T = 0.4 (the panel's protocol) and greedy; pass@G at the rollout temperature;
teacher success (the same policy with the privileged hint); the policy's token entropy on the first update's rollout
tokens (its T = 1 distribution); ``rollout/zero_std_groups`` and ``rollout/distinct_responses`` averaged over RL
steps 1-5 (before any filtering);
success after 20 RL steps and the gain; the run's wall time (two runs sharing 2 cores, one thread each).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import machine_record  # noqa: E402
from craft_pl.tools.campaign import Campaign  # noqa: E402
from tests.tb import read_scalars  # noqa: E402


def first(scalars: dict, tag: str) -> float | None:
    values = sorted(scalars.get(tag, []))
    return values[0][1] if values else None


def lever_row(run_dir: Path, result: dict) -> dict:
    scalars = read_scalars(run_dir)
    success = sorted(scalars.get("val/success_rate", []))
    zero_std = [v for _, v in sorted(scalars.get("rollout/zero_std_groups", []))][:5]
    distinct = [v for _, v in sorted(scalars.get("rollout/distinct_responses", []))][:5]
    return {
        "student_t04": first(scalars, "val/success_rate"),
        "student_greedy": first(scalars, "val/success_rate_greedy"),
        "pass_at_g": first(scalars, "val/pass_at_g"),
        "teacher": first(scalars, "val/success_rate_privileged"),
        "entropy_first_update": first(scalars, "train/entropy"),
        "zero_std_groups_steps_1_5": sum(zero_std) / len(zero_std) if zero_std else None,
        "distinct_responses_steps_1_5": sum(distinct) / len(distinct) if distinct else None,
        "end": success[-1][1] if len(success) > 1 else None,
        "gain": success[-1][1] - success[0][1] if len(success) > 1 else None,
        "wall_s": result.get("wall_s"),
        "command": result.get("command"),
    }


def render(rows: dict[str, dict]) -> str:
    def cell(value):
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    columns = ["student_t04", "student_greedy", "pass_at_g", "teacher", "entropy_first_update",
               "zero_std_groups_steps_1_5", "distinct_responses_steps_1_5", "end", "gain", "wall_s"]
    lines = ["| lever | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaign", default=str(ROOT / "configs/campaigns/signal_levers_webshop.yaml"))
    args = parser.parse_args()
    campaign = Campaign.load(args.campaign)
    rows = {}
    for run in campaign.runs():
        result_path = run.directory / "result.json"
        if not result_path.exists():
            continue
        rows[f"{run.method}/seed{run.seed}"] = lever_row(run.directory, json.loads(result_path.read_text()))
    out = ROOT / "benchmarks" / "results"
    (out / "signal_levers.json").write_text(json.dumps({"campaign": args.campaign, "rows": rows,
                                                        "machine": machine_record()}, indent=2) + "\n")
    print(render(rows))


if __name__ == "__main__":
    main()
