"""``python -m craft_pl.tools.campaign --config configs/campaigns/<name>.yaml``: a grid of methods x seeds (x environments),
each run a normal ``fit`` in its own directory, then a results table and plot (``craft_pl.tools.campaign_report``).

The grid is checked before anything runs (every config exists and every run's configuration parses). Finished runs
are skipped, interrupted ones resume from their last checkpoint, a crashed run is recorded as failed with its error
and the others go on. The analysis is fixed in advance: final validation success per method (mean, standard
deviation, 95% confidence interval over seeds) and the paired difference against the baseline method, per seed,
plus any pre-registered ``comparisons`` (pairs of methods). With ``test: true`` each run is then evaluated once on the
held-out test panel (``test`` with its final checkpoint) and that number, not the validation panel's, is the one
reported: selection may look at validation, the reported number never has. With ``warm_start_arm`` the warm-started
policy itself joins the grid as one more arm (evaluated, never trained), so that what RL adds is a paired comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from craft_pl.tools.campaign_report import last_line, read_validation_curve, write_report

METHOD_DIR = Path("configs/method")


@dataclass(frozen=True)
class Run:
    """One cell of the grid."""

    environment: str
    method: str
    seed: int
    configs: tuple[str, ...]
    directory: Path

    @property
    def name(self) -> str:
        return f"{self.environment}/{self.method}/seed{self.seed}"


@dataclass
class Campaign:
    """A campaign file: which runs, where they go, what the table compares."""

    name: str
    environments: dict[str, list[str]]
    methods: dict[str, list[str]]
    """Per method: config files applied in order, and ``--key=value`` arguments of that method alone."""
    seeds: list[int]
    baseline: str | None = None
    overrides: list[str] = field(default_factory=list)
    output_dir: str = "runs/campaigns"
    results_dir: str = "benchmarks/results"
    parallel: int = 1
    threads_per_run: int | None = None
    test: bool = False
    """Report the final checkpoint's success on the held-out test panel (``data.test_tasks``) instead of the last
    validation."""
    comparisons: list[list[str]] = field(default_factory=list)
    """Pre-registered paired differences ``[a, b]`` (a - b per seed, with its 95% CI), beside the baseline column."""
    warm_start_arm: str | None = None
    """The name of an extra arm, per environment and seed: the warm-started policy itself, with no RL step, evaluated
    on the same panels (``validate``, and ``test`` with ``test: true``, both without a checkpoint; environment configs
    and ``overrides`` only). Pair it with an RL arm in ``comparisons`` (``[grpo, warm_start]``: what RL adds)."""

    @classmethod
    def load(cls, path: str | Path) -> "Campaign":
        """Read and check a campaign file; every problem is reported before any run starts."""
        raw = yaml.safe_load(Path(path).read_text())
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown campaign keys {unknown}; known keys are {sorted(known)}")
        methods = raw.get("methods") or {}
        if isinstance(methods, list):  # shorthand: names of configs/method/<name>.yaml
            methods = {name: [str(METHOD_DIR / f"{name}.yaml")] for name in methods}
        raw["methods"] = {name: list(configs) for name, configs in methods.items()}
        raw["environments"] = {name: list(c) for name, c in (raw.get("environments") or {}).items()}
        campaign = cls(**raw)
        campaign.check()
        return campaign

    def check(self) -> None:
        problems = []
        if not self.environments or not self.methods or not self.seeds:
            problems.append("a campaign needs at least one environment, one method and one seed")
        arms = set(self.methods) | ({self.warm_start_arm} if self.warm_start_arm else set())
        if self.warm_start_arm in self.methods:
            problems.append(f"warm_start_arm {self.warm_start_arm!r} is also a method; give it another name")
        if self.baseline is not None and self.baseline not in arms:
            problems.append(f"baseline {self.baseline!r} is not one of the methods {sorted(arms)}")
        for group, entries in (("environment", self.environments), ("method", self.methods)):
            for name, configs in entries.items():
                for config in configs:
                    if not config.startswith("--") and not Path(config).is_file():
                        problems.append(f"{group} {name!r}: config file {config} does not exist")
        if self.parallel < 1:
            problems.append(f"parallel must be >= 1, got {self.parallel}")
        for pair in self.comparisons:
            if not isinstance(pair, list) or len(pair) != 2 or any(m not in arms for m in pair):
                problems.append(f"comparison {pair!r} must be two of the methods {sorted(arms)}")
        if len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds must be distinct, got {self.seeds}")
        if problems:
            raise ValueError("invalid campaign:\n  " + "\n  ".join(problems))

    @property
    def run_root(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def results_path(self) -> Path:
        return Path(self.results_dir) / self.name

    def runs(self) -> list[Run]:
        methods = {**({self.warm_start_arm: []} if self.warm_start_arm else {}), **self.methods}
        return [Run(env, method, seed, tuple(env_configs + method_configs), self.run_root / env / method / f"seed{seed}")
                for env, env_configs in self.environments.items()
                for method, method_configs in methods.items()
                for seed in self.seeds]

    def fit_arguments(self, run: Run, command: str = "fit", root: Path | None = None) -> list[str]:
        """The run's command line; ``root`` (default the run's directory) is where its logs and reports go."""
        args = [command]
        for config in run.configs:  # a config file, or a ``--key=value`` argument of this method / environment
            args += [config] if config.startswith("--") else ["--config", config]
        return args + [f"--seed_everything={run.seed}", f"--trainer.default_root_dir={root or run.directory}",
                       *self.overrides]


def check_runs_parse(campaign: Campaign) -> None:
    """Parse every run's configuration the way ``fit`` would (no model loads); raise with every failure."""
    from craft_pl.cli import main

    failures = []
    for run in campaign.runs():
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                main(campaign.fit_arguments(run) + ["--print_config"])
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                failures.append(f"{run.name}: {last_line(output.getvalue())}")
    if failures:
        raise ValueError("these runs' configurations do not parse:\n  " + "\n  ".join(failures))


def _resume_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint of an unfinished run (an interrupt snapshot or Lightning's end-of-step checkpoint)."""
    candidates = sorted(directory.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def execute(campaign: Campaign, run: Run) -> dict:
    """Run one cell (or skip it when its result exists); returns its result record."""
    result_path = run.directory / "result.json"
    if result_path.exists():
        previous = json.loads(result_path.read_text())
        if previous.get("status") == "ok" and (not campaign.test or "test_success" in previous):
            return previous
        if previous.get("status") == "ok":  # fitted before ``test`` was asked for: only the test is left
            return _write(result_path, {**previous, **evaluate_on_test_panel(campaign, run)})
    run.directory.mkdir(parents=True, exist_ok=True)
    if run.method == campaign.warm_start_arm:
        return _write(result_path, evaluate_warm_start(campaign, run))
    args = campaign.fit_arguments(run)
    checkpoint = _resume_checkpoint(run.directory)
    if checkpoint is not None:
        args.append(f"--ckpt_path={checkpoint}")
    started = time.time()
    print(f"[campaign] start {run.name}" + (f" (resuming {checkpoint.name})" if checkpoint else ""), flush=True)
    code = call_craft_pl(campaign, run, args)
    record = {"run": run.name, "environment": run.environment, "method": run.method, "seed": run.seed,
              "command": f"python -m craft_pl {' '.join(args)}", "wall_s": round(time.time() - started, 1)}
    curve = read_validation_curve(run.directory) if code == 0 else []
    if code == 0 and curve:
        record.update(status="ok", curve=curve, final_success=curve[-1][1])
        if campaign.test:
            record.update(evaluate_on_test_panel(campaign, run))
    else:
        record.update(status="failed", exit_code=code,
                      error=log_tail(run) if code else "the run logged no val/success_rate")
    _write(result_path, record)
    print(f"[campaign] {record['status']} {run.name} in {record['wall_s']:.0f}s"
          + (f": final val success {record['final_success']:.3f}" if record["status"] == "ok" else "")
          + (f", test success {record['test_success']:.3f}" if "test_success" in record else ""), flush=True)
    return record


def call_craft_pl(campaign: Campaign, run: Run, args: list[str]) -> int:
    """``python -m craft_pl <args>`` for ``run``, appended to its ``stdout.log`` (with the campaign's thread count);
    returns the exit code."""
    env = dict(os.environ)
    if campaign.threads_per_run:
        env.update(OMP_NUM_THREADS=str(campaign.threads_per_run), MKL_NUM_THREADS=str(campaign.threads_per_run))
    with open(run.directory / "stdout.log", "a") as log:
        log.write(f"\n$ {sys.executable} -m craft_pl {' '.join(args)}\n")
        log.flush()
        return subprocess.call([sys.executable, "-m", "craft_pl", *args], stdout=log, stderr=subprocess.STDOUT, env=env)


def log_tail(run: Run, lines: int = 15) -> str:
    return "\n".join((run.directory / "stdout.log").read_text().strip().splitlines()[-lines:])


def _write(path: Path, record: dict) -> dict:
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record


def evaluate_on_test_panel(campaign: Campaign, run: Run) -> dict:
    """The fitted run's final checkpoint on the held-out test panel: ``test_success`` (or the failure)."""
    checkpoints = sorted(run.directory.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not checkpoints:
        return {"status": "failed", "error": "test: the run left no checkpoint (trainer.enable_checkpointing?)"}
    args = campaign.fit_arguments(run, "test", root=run.directory / "test") + [f"--ckpt_path={checkpoints[-1]}"]
    code = call_craft_pl(campaign, run, args)
    report = checkpoints[-1].with_suffix(".test.json")
    if code != 0 or not report.exists():
        return {"status": "failed", "exit_code": code, "error": "test: " + log_tail(run)}
    metrics = json.loads(report.read_text())["metrics"]
    return {"test_success": metrics["test/success_rate"], "test_command": f"python -m craft_pl {' '.join(args)}",
            "test_metrics": metrics}


def evaluate_warm_start(campaign: Campaign, run: Run) -> dict:
    """The warm-started policy with no RL step: ``validate`` (its validation success, the curve's one point at RL
    step 0) and, with ``test: true``, ``test`` on the held-out panel; each without a checkpoint, in its own folder."""
    started = time.time()
    record = {"run": run.name, "environment": run.environment, "method": run.method, "seed": run.seed}
    print(f"[campaign] start {run.name} (the warm start, no RL)", flush=True)
    for stage, prefix in [("validate", "val")] + ([("test", "test")] if campaign.test else []):
        args = campaign.fit_arguments(run, stage, root=run.directory / stage)
        code = call_craft_pl(campaign, run, args)
        reports = sorted((run.directory / stage).rglob(f"{prefix}_step0.json"), key=lambda p: p.stat().st_mtime)
        if code != 0 or not reports:
            return {**record, "status": "failed", "exit_code": code, "error": f"{stage}: " + log_tail(run),
                    "wall_s": round(time.time() - started, 1)}
        metrics = json.loads(reports[-1].read_text())["metrics"]
        if stage == "validate":
            record.update(command=f"python -m craft_pl {' '.join(args)}", curve=[(0, metrics["val/success_rate"])],
                          final_success=metrics["val/success_rate"])
        else:
            record.update(test_success=metrics["test/success_rate"], test_metrics=metrics,
                          test_command=f"python -m craft_pl {' '.join(args)}")
    record.update(status="ok", wall_s=round(time.time() - started, 1))
    print(f"[campaign] ok {run.name}: val success {record['final_success']:.3f}"
          + (f", test success {record['test_success']:.3f}" if "test_success" in record else ""), flush=True)
    return record


def run_campaign(campaign: Campaign, check_configs: bool = True) -> list[dict]:
    """Execute (or skip) every run, then write the results table and plot."""
    if check_configs:
        check_runs_parse(campaign)
    runs = campaign.runs()
    with ThreadPoolExecutor(max_workers=campaign.parallel) as pool:
        records = list(pool.map(lambda run: execute(campaign, run), runs))
    write_report(campaign, records)
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m craft_pl.tools.campaign", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="campaign file, e.g. configs/campaigns/ablation_webshop_cpu.yaml")
    parser.add_argument("--parallel", type=int, help="runs at once (overrides the file)")
    parser.add_argument("--report_only", action="store_true", help="rewrite the table and plot from finished runs")
    args = parser.parse_args(argv)
    try:
        campaign = Campaign.load(args.config)
        if args.parallel is not None:
            campaign.parallel = args.parallel
            campaign.check()
        if args.report_only:
            records = [json.loads((r.directory / "result.json").read_text()) for r in campaign.runs()
                       if (r.directory / "result.json").exists()]
            write_report(campaign, records)
        else:
            run_campaign(campaign)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"[campaign] results in {campaign.results_path}")


if __name__ == "__main__":
    main()
