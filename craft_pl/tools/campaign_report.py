"""A campaign's results: validation curves read back from TensorBoard, the fixed analysis, markdown, CSV and PNG.

The analysis (decided before any run): the final ``val/success_rate`` of each run; per method its mean, standard
deviation and 95% confidence interval over seeds (Student t); per method the paired difference against the baseline
on the same seeds, with its 95% confidence interval. A difference whose interval contains 0 is not a finding.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from craft_pl.tools.campaign import Campaign

T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
"""Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (1.96 beyond)."""


def read_validation_curve(directory: Path) -> list[tuple[int, float]]:
    """``[(rl_step, val/success_rate)]`` of a run, over all its TensorBoard files (a resumed run writes several).

    Each evaluation logs ``val/rl_step`` (RL steps completed) beside its metrics; the i-th of each belong together.
    Runs without it are mapped through the ``rl_step`` scalar (Lightning logs epoch-end validation one optimizer step
    before the step's last update; the evaluation at step 0 is the one before RL).
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curve: dict[int, float] = {}
    for events in sorted(Path(directory).rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags = accumulator.Tags()["scalars"]
        if "val/success_rate" not in tags:
            continue
        success = accumulator.Scalars("val/success_rate")
        if "val/rl_step" in tags:
            curve.update({int(round(s.value)): v.value for s, v in zip(accumulator.Scalars("val/rl_step"), success)})
            continue
        logged = sorted((e.step, int(round(e.value))) for e in accumulator.Scalars("rl_step")) if "rl_step" in tags else []
        for event in success:
            after = [rl for step, rl in logged if step >= event.step]
            curve[0 if event.step == 0 or not after else after[0]] = event.value
    return sorted(curve.items())


def last_line(text: str) -> str:
    """The last non-empty line of a log or error text (what a table shows of a failure)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def mean_std_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation and 95% CI half-width (nan when fewer than 2 values)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = T_975[n - 2] if n - 1 <= len(T_975) else 1.96
    return mean, std, t * std / math.sqrt(n)


def reported(record: dict) -> float:
    """The run's reported number: its held-out test success when the campaign ran the test, else its final
    validation success."""
    return record.get("test_success", record["final_success"])


def paired(records: list[dict], environment: str, first: str, second: str) -> dict:
    """``first - second`` per seed on the seeds both finished: mean, 95% CI half-width, seeds, per-seed values."""
    def values(method: str) -> dict[int, float]:
        return {r["seed"]: reported(r) for r in records
                if r["environment"] == environment and r["method"] == method and r["status"] == "ok"}
    a, b = values(first), values(second)
    differences = {s: a[s] - b[s] for s in sorted(set(a) & set(b))}
    mean, _, ci = mean_std_ci(list(differences.values()))
    return {"environment": environment, "comparison": f"{first} - {second}", "diff": mean, "ci95": ci,
            "seeds": len(differences), "per_seed": " ".join(f"{s}:{v:+.3f}" for s, v in differences.items())}


def summarise(records: list[dict], baseline: str | None) -> list[dict]:
    """One row per (environment, method): reported success statistics and the paired difference to the baseline."""
    rows = []
    keys = sorted({(r["environment"], r["method"]) for r in records}, key=lambda k: (k[0], _order(records, k[1])))
    for environment, method in keys:
        mine = [r for r in records if r["environment"] == environment and r["method"] == method]
        finals = {r["seed"]: reported(r) for r in mine if r["status"] == "ok"}
        mean, std, ci = mean_std_ci(list(finals.values()))
        row = {"environment": environment, "method": method, "seeds_ok": len(finals), "seeds_failed":
               sum(r["status"] != "ok" for r in mine), "mean": mean, "std": std, "ci95": ci,
               "per_seed": " ".join(f"{s}:{v:.3f}" for s, v in sorted(finals.items())),
               "diff_vs_baseline": math.nan, "diff_ci95": math.nan, "paired_seeds": 0,
               "errors": "; ".join(f"seed {r['seed']}: {last_line(r.get('error', ''))}" for r in mine
                                   if r["status"] != "ok")}
        if baseline and method != baseline:
            difference = paired(records, environment, method, baseline)
            row["diff_vs_baseline"], row["diff_ci95"] = difference["diff"], difference["ci95"]
            row["paired_seeds"] = difference["seeds"]
        rows.append(row)
    return rows


def _order(records: list[dict], method: str) -> int:
    names = list(dict.fromkeys(r["method"] for r in records))
    return names.index(method)


def _fmt(value: float, signed: bool = False) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def write_report(campaign: "Campaign", records: list[dict]) -> None:
    """``results.md``, ``results.csv`` and ``success_vs_step.png`` in the campaign's results directory."""
    out = campaign.results_path
    out.mkdir(parents=True, exist_ok=True)
    rows = summarise(records, campaign.baseline)
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["method"])
        writer.writeheader()
        writer.writerows(rows)
    metric = "`test/success_rate` of the final checkpoint (held-out test panel)" if campaign.test \
        else "Final `val/success_rate`"
    lines = [f"# Campaign `{campaign.name}`", "",
             f"{metric} per run; mean, standard deviation and 95% CI (Student t) over seeds; paired "
             f"difference against `{campaign.baseline}` on the same seeds with its 95% CI.", "",
             "| environment | method | seeds ok | failed | mean | std | 95% CI | diff vs baseline | diff 95% CI | per seed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['environment']} | {row['method']} | {row['seeds_ok']} | {row['seeds_failed']} | "
                     f"{_fmt(row['mean'])} | {_fmt(row['std'])} | ±{_fmt(row['ci95'])} | "
                     f"{_fmt(row['diff_vs_baseline'], True)} | ±{_fmt(row['diff_ci95'])} | {row['per_seed']} |")
    if campaign.comparisons:
        lines += ["", "## Pre-registered comparisons", "", "Paired difference of the reported number per seed, mean "
                  "and 95% CI (Student t); an interval that contains 0 is not a finding.", "",
                  "| environment | comparison | seeds | diff | 95% CI | CI half-width | per seed |", "|---|---|---|---|---|---|---|"]
        for environment in dict.fromkeys(r["environment"] for r in records):
            for first, second in campaign.comparisons:
                d = paired(records, environment, first, second)
                low, high = d["diff"] - d["ci95"], d["diff"] + d["ci95"]
                interval = "n/a" if math.isnan(d["ci95"]) else f"[{low:+.3f}, {high:+.3f}]"
                lines.append(f"| {environment} | {d['comparison']} | {d['seeds']} | {_fmt(d['diff'], True)} | "
                             f"{interval} | {_fmt(d['ci95'])} | {d['per_seed']} |")
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed runs", ""]
        lines += [f"- `{r['run']}` (exit {r.get('exit_code')}): `{last_line(r.get('error', ''))}`" for r in failed]
    commands = sorted({r["command"] for r in records})[:1]
    lines += ["", f"Runs: {len(records)}, wall {sum(r.get('wall_s', 0) for r in records) / 60:.1f} min in total. "
              f"Example run command: `{commands[0] if commands else ''}`"]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plot(records, out / "success_vs_step.png")


def _plot(records: list[dict], path: Path) -> None:
    """Mean validation success against RL step per method, with a band of +-1 standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    environments = sorted({r["environment"] for r in records})
    figure, axes = plt.subplots(1, max(1, len(environments)), figsize=(6 * max(1, len(environments)), 4),
                                squeeze=False)
    for axis, environment in zip(axes[0], environments):
        methods = list(dict.fromkeys(r["method"] for r in records if r["environment"] == environment))
        for method in methods:
            curves = [dict(r["curve"]) for r in records if r["environment"] == environment and r["method"] == method
                      and r["status"] == "ok"]
            steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
            if not steps:
                continue
            stats = [mean_std_ci([c[s] for c in curves]) for s in steps]
            means = [m for m, _, _ in stats]
            spread = [0.0 if math.isnan(sd) else sd for _, sd, _ in stats]
            line, = axis.plot(steps, means, marker="o", label=f"{method} (n={len(curves)})")
            axis.fill_between(steps, [m - s for m, s in zip(means, spread)], [m + s for m, s in zip(means, spread)],
                              color=line.get_color(), alpha=0.15)
        axis.set_title(f"{environment}: validation success (mean ± 1 sd over seeds)")
        axis.set_xlabel("RL step")
        axis.set_ylabel("val/success_rate")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
