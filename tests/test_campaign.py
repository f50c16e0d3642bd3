"""Campaign runner: a 2-method x 2-seed grid on the toy environment gives the table, the CSV and the plot; bad
campaigns fail before any run; a crashing run is recorded as failed and the others go on; finished runs are skipped."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from craft_pl.tools.campaign import Campaign, run_campaign
from craft_pl.tools.campaign_report import mean_std_ci

REPO = Path(__file__).resolve().parents[1]


def _toy_config(tmp_path) -> str:
    config = {
        "trainer": {"max_epochs": 2, "check_val_every_n_epoch": 1, "enable_progress_bar": False,
                    "enable_model_summary": False},
        "model": {"lr": 0.01, "policy": {"class_path": "craft_pl.model.Policy", "init_args": {
            "tiny": {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
                     "intermediate_size": 64},
            "warm_start": {"num_demos": 40, "steps": 30, "batch_size": 8, "cache_dir": str(tmp_path / "cache")}}}},
        "data": {"env": "tests.toy_env.PickWordEnv", "tasks_per_step": 2, "group_size": 4, "val_tasks": 4,
                 "max_new_tokens": 10, "num_mini_batches": 2},
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _campaign(tmp_path, methods, **extra) -> Path:
    spec = {"name": "smoke", "output_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results"),
            "environments": {"toy": [_toy_config(tmp_path)]}, "methods": methods, "seeds": [0, 1],
            "baseline": "sdar", **extra}
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.slow
def test_a_small_grid_gives_the_table_and_plot_and_survives_a_crashing_method(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  lr: -1.0\n")  # parses, then fails when the run builds its objects
    methods = {"grpo": ["configs/method/grpo.yaml"], "sdar": ["configs/method/sdar.yaml"], "broken": [str(broken)]}
    campaign = Campaign.load(_campaign(tmp_path, methods))
    records = run_campaign(campaign)
    status = {(r["method"], r["seed"]): r["status"] for r in records}
    assert status == {("grpo", 0): "ok", ("grpo", 1): "ok", ("sdar", 0): "ok", ("sdar", 1): "ok",
                      ("broken", 0): "failed", ("broken", 1): "failed"}
    assert all("model.lr must be > 0" in r["error"] for r in records if r["method"] == "broken")
    out = tmp_path / "results" / "smoke"
    assert (out / "success_vs_step.png").stat().st_size > 1000
    table = (out / "results.md").read_text()
    assert "| toy | grpo | 2 | 0 |" in table and "| toy | broken | 0 | 2 |" in table and "Failed runs" in table
    rows = {row["method"]: row for row in csv.DictReader(open(out / "results.csv"))}
    by_seed = {(r["method"], r["seed"]): r["final_success"] for r in records if r["status"] == "ok"}
    diff = [by_seed[("grpo", s)] - by_seed[("sdar", s)] for s in (0, 1)]
    assert float(rows["grpo"]["diff_vs_baseline"]) == pytest.approx(sum(diff) / 2)
    grpo = next(r for r in records if r["method"] == "grpo")
    assert [step for step, _ in grpo["curve"]] == [0, 1, 2]  # validation before RL and after each RL step

    again = run_campaign(campaign, check_configs=False)  # finished runs are skipped: same records, no new runs
    assert [r["wall_s"] for r in again if r["status"] == "ok"] == [r["wall_s"] for r in records if r["status"] == "ok"]


@pytest.mark.slow
def test_the_reported_number_comes_from_the_test_panel_and_comparisons_are_paired(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    methods = {"grpo": ["configs/method/grpo.yaml"],
               "sdar": ["configs/method/sdar.yaml", "--model.objective.init_args.distill_coef=0.5"]}
    campaign = Campaign.load(_campaign(tmp_path, methods, test=True, comparisons=[["sdar", "grpo"]],
                                       overrides=["--trainer.max_epochs=1", "--data.test_tasks=6"]))
    records = run_campaign(campaign)
    assert all(r["status"] == "ok" for r in records)
    for record in records:  # the final checkpoint on the held-out panel: 6 tasks, its own report beside the checkpoint
        assert record["test_metrics"]["test/success_rate"] == record["test_success"]
        assert "--data.test_tasks=6" in record["test_command"] and "--ckpt_path=" in record["test_command"]
        assert ("distill_coef=0.5" in record["command"]) == (record["method"] == "sdar")  # a method's own argument
    by_seed = {(r["method"], r["seed"]): r["test_success"] for r in records}
    diff = [by_seed[("sdar", s)] - by_seed[("grpo", s)] for s in (0, 1)]
    table = (tmp_path / "results" / "smoke" / "results.md").read_text()
    assert "`test/success_rate` of the final checkpoint" in table
    assert f"| toy | sdar - grpo | 2 | {sum(diff) / 2:+.3f} |" in table
    rows = {row["method"]: row for row in csv.DictReader(open(tmp_path / "results" / "smoke" / "results.csv"))}
    assert float(rows["grpo"]["mean"]) == pytest.approx((by_seed[("grpo", 0)] + by_seed[("grpo", 1)]) / 2)


@pytest.mark.slow
def test_the_warm_start_arm_is_the_policy_before_rl_on_the_same_panels(tmp_path, monkeypatch):
    """PC1's arm: the warm-started policy evaluated with no RL step; its validation success is the RL arm's own
    validation before RL (same warm start, same panel, same evaluation stream), and it pairs with the RL arm."""
    monkeypatch.chdir(REPO)
    campaign = Campaign.load(_campaign(tmp_path, {"grpo": ["configs/method/grpo.yaml"]}, baseline="grpo", test=True,
                                       warm_start_arm="warm_start", comparisons=[["grpo", "warm_start"]],
                                       overrides=["--trainer.max_epochs=1", "--data.test_tasks=6"]))
    records = {(r["method"], r["seed"]): r for r in run_campaign(campaign)}
    assert set(records) == {(m, s) for m in ("warm_start", "grpo") for s in (0, 1)}
    for seed in (0, 1):
        start, rl = records[("warm_start", seed)], records[("grpo", seed)]
        assert start["status"] == "ok" and "--ckpt_path" not in start["test_command"]
        assert start["curve"] == [(0, rl["curve"][0][1])] and start["final_success"] == rl["curve"][0][1]
        assert start["test_metrics"]["test/success_rate"] == start["test_success"]
        assert not list((tmp_path / "runs" / "smoke" / "toy" / "warm_start").rglob("*.ckpt"))  # never trained
    diff = [records[("grpo", s)]["test_success"] - records[("warm_start", s)]["test_success"] for s in (0, 1)]
    table = (tmp_path / "results" / "smoke" / "results.md").read_text()
    assert f"| toy | grpo - warm_start | 2 | {sum(diff) / 2:+.3f} |" in table
    with pytest.raises(ValueError, match="warm_start_arm 'grpo' is also a method"):
        Campaign.load(_campaign(tmp_path, {"grpo": ["configs/method/grpo.yaml"]}, baseline="grpo",
                                warm_start_arm="grpo"))


def test_unknown_methods_and_configs_fail_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    with pytest.raises(ValueError, match="config file configs/method/no_such_method.yaml does not exist"):
        Campaign.load(_campaign(tmp_path, ["grpo", "no_such_method"], baseline="grpo"))
    with pytest.raises(ValueError, match="baseline 'sdar' is not one of the methods"):
        Campaign.load(_campaign(tmp_path, ["grpo"]))
    with pytest.raises(ValueError, match="comparison \\['grpo', 'craft'\\] must be two of the methods"):
        Campaign.load(_campaign(tmp_path, ["grpo", "sdar"], comparisons=[["grpo", "craft"]]))
    with pytest.raises(ValueError, match="unknown campaign keys"):
        Campaign.load(_campaign(tmp_path, ["grpo", "sdar"], sedes=[1]))
    assert not (tmp_path / "runs").exists()


def test_confidence_interval_uses_student_t():
    mean, std, ci = mean_std_ci([0.50, 0.52, 0.54])
    assert mean == pytest.approx(0.52) and std == pytest.approx(0.02)
    assert ci == pytest.approx(4.303 * 0.02 / 3 ** 0.5)


@pytest.mark.parametrize("name", ["ablation_webshop_cpu", "paper_gpu", "smoke", "distill_sweep_cpu", "teacher_harm_webshop",
                                  "pc_distill_select_webshop"])
def test_shipped_campaigns_load(name, monkeypatch):
    monkeypatch.chdir(REPO)
    campaign = Campaign.load(f"configs/campaigns/{name}.yaml")
    assert campaign.baseline in campaign.methods and campaign.runs()
    if name == "teacher_harm_webshop":  # the pre-registered grid: 9 arms x 5 seeds, H1-H4 first among its comparisons
        assert len(campaign.runs()) == 45 and campaign.test
        assert campaign.comparisons[:4] == [["sdar_r1", "grpo"], ["sdar_r05", "sdar_r1"], ["craft_r05", "sdar_r05"],
                                            ["craft_loo_r05", "craft_r05"]]
    if name == "distill_sweep_cpu":  # each method's own argument reaches its parsed configuration
        import contextlib
        import io

        from craft_pl.cli import main

        for run in campaign.runs()[::3]:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
                main(campaign.fit_arguments(run) + ["--print_config"])
            config = yaml.safe_load(printed.getvalue())
            assert config["model"]["objective"]["init_args"]["distill_coef"] == float(run.method.split("_d")[1])
    if name == "ablation_webshop_cpu":
        from craft_pl.tools.campaign import check_runs_parse

        check_runs_parse(campaign)
        assert {"grpo", "sdar", "adaptive_cringe", "craft", "craft_cti_only"} == set(campaign.methods)
        assert len(campaign.runs()) == 15
