"""Every config parses; overlays compose; bad input fails at parse time, before any model loads; each method
resolves to what the method table says; every campaign arm resolves to the configuration it had when it ran."""

import json
import re
from pathlib import Path

import pytest
import yaml

from craft_pl.cli import main
from tests import campaign_arms

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
ENV_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if p.name != "smoke.yaml")
OVERLAYS = sorted(CONFIGS.glob("method/*.yaml")) + sorted(CONFIGS.glob("ablations/*.yaml")) + [CONFIGS / "smoke.yaml"]


def _print_config(capsys, *configs, extra=()):
    args = ["fit"] + [a for c in configs for a in ("--config", str(c))] + list(extra) + ["--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (None, 0)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("config", ENV_CONFIGS, ids=lambda p: p.name)
def test_environment_configs_parse(config, capsys):
    resolved = _print_config(capsys, config)
    assert resolved["data"]["env"]["class_path"]
    assert resolved["model"]["policy"]["class_path"] == "craft_pl.model.Policy"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_overlays_compose_on_the_default_environment(overlay, capsys):
    resolved = _print_config(capsys, CONFIGS / "webshop.yaml", overlay)
    expected = yaml.safe_load(overlay.read_text())
    if "objective" in expected.get("model", {}):  # the overlay's keys win; the code's defaults fill the rest
        stated = expected["model"]["objective"]
        assert resolved["model"]["objective"]["class_path"] == stated["class_path"]
        for key, value in (stated.get("init_args") or {}).items():
            if not isinstance(value, dict):
                assert resolved["model"]["objective"]["init_args"][key] == value, key
    if overlay.name == "smoke.yaml":
        assert resolved["data"]["tasks_per_step"] == 2 and resolved["trainer"]["max_epochs"] == 2
        assert resolved["model"]["policy"]["init_args"]["warm_start"]["steps"] == 20
        assert resolved["model"]["policy"]["init_args"]["tiny"]["hidden_size"] == 128  # kept from webshop.yaml


def test_environment_configs_hold_no_method_keys():
    for config in ENV_CONFIGS:
        model = yaml.safe_load(config.read_text()).get("model", {})
        assert "objective" not in model and "pillars" not in model, config.name


@pytest.mark.parametrize(
    "override, message",
    [
        ("--data.group_size=0", "data.group_size"),
        ("--data.tasks_per_step=0", "data.tasks_per_step"),
        ("--data.no_such_key=1", "no_such_key"),
        ("--model.policy.init_args.model=./missing/model", "does not exist"),
        ("--model.lr=-1", "model.lr"),
        ("--data.temperature=-0.5", "temperature"),
    ],
)
def test_bad_config_fails_before_any_model_loads(override, message, capsys, monkeypatch):
    import craft_pl.model

    monkeypatch.setattr(craft_pl.model.Policy, "build", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "webshop.yaml"), override])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


PILLAR_NAMES = {"CounterfactualTokenImportance": "CTI", "AsymmetricController": "controller",
                "PolarisedKL": "polarised KL", "AdaptiveCringe": "CRINGE", "LogitDistillation": "logit distillation"}
ESTIMATOR_NAMES = {"GRPOAdvantage": "GRPO", "GiGPOAdvantage": "GiGPO"}


def _method_table() -> dict[str, dict[str, str]]:
    """The method table of ``docs/methods.md``: ``{overlay stem: {column: cell}}``."""
    for page in [ROOT / "docs" / "methods.md"]:
        lines = page.read_text().splitlines()
        for index, line in enumerate(lines):
            header = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if "pg_coef" in header and "distill_coef" in header:
                table = {}
                for row in lines[index + 2:]:
                    if not row.startswith("|"):
                        break
                    cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
                    name = re.search(r"`([\w.]+)\.yaml`", cells[0])
                    if name:
                        table[name.group(1)] = dict(zip(header, cells))
                return table
    raise AssertionError("no method table (a table with pg_coef and distill_coef columns) in docs/methods.md")


def test_every_method_resolves_to_its_row_of_the_method_table(capsys):
    table = _method_table()
    assert set(table) == {path.stem for path in CONFIGS.glob("method/*.yaml")}
    for method, row in table.items():
        resolved = _print_config(capsys, CONFIGS / "webshop.yaml", CONFIGS / "method" / f"{method}.yaml")
        objective = resolved["model"]["objective"]["init_args"]
        for key in ("pg_coef", "kl_coef", "distill_coef", "gate_beta"):
            if row[key] not in ("-", ""):
                assert objective[key] == float(row[key]), (method, key)
            else:  # "-": the term the coefficient belongs to is off
                assert key == "gate_beta" and objective["distill_coef"] == 0.0, method
        estimator = (objective.get("advantage") or {}).get("class_path", "craft_pl.advantages.GRPOAdvantage")
        assert ESTIMATOR_NAMES[estimator.rsplit(".", 1)[-1]] == row["advantage"], method
        pillars = [PILLAR_NAMES[p["class_path"].rsplit(".", 1)[-1]] for p in resolved["model"]["pillars"]
                   if (p.get("init_args") or {}).get("enabled", True)]
        stated = [re.sub(r"\s*\(.*\)$", "", name.strip()) for name in row["pillars"].split(",")]
        assert pillars == ([] if stated == ["none"] else stated), method


def test_ablations_state_only_the_pillars_they_switch():
    sdar = _print_config
    for ablation in CONFIGS.glob("ablations/*.yaml"):
        assert len(ablation.read_text().splitlines()) <= 12, ablation.name
        model = yaml.safe_load(ablation.read_text())["model"]
        assert set(model) == {"objective", "pillars"} and model["objective"].get("init_args") is None, ablation.name
    assert sdar  # the resolved equivalence of each ablation is checked by the campaign-arm test below


def test_the_all_disabled_ablation_resolves_to_sdar(capsys):
    ablation = _print_config(capsys, CONFIGS / "webshop.yaml", CONFIGS / "ablations" / "craft_all_disabled.yaml")
    sdar = _print_config(capsys, CONFIGS / "webshop.yaml", CONFIGS / "method" / "sdar.yaml")
    assert ablation["model"] == sdar["model"]


@pytest.mark.slow
def test_every_campaign_arm_resolves_to_the_configuration_it_ran_with(monkeypatch, capsys):
    """``tests/data/campaign_arms.json`` was written from the configs before the loss-room restructuring; a new
    campaign arm is added to it by rerunning ``campaign_arms.record`` (see that module)."""
    monkeypatch.chdir(ROOT)
    recorded = json.loads((ROOT / "tests" / "data" / "campaign_arms.json").read_text())
    arms = campaign_arms.resolve_arms(main)
    assert set(arms) == set(recorded)
    # campaigns without recorded results follow WebShop master's option rule, the new default; the recorded ones pin
    # the v2 branch's rule they ran with (--data.env.init_args.option_rule=v2)
    moved = {key for key in arms if key.startswith(("smoke/webshop/", "paper_gpu/webshop_"))}
    for key in moved:
        assert arms[key]["data"]["env"]["init_args"]["option_rule"] == "master", key
    changed = [key for key, config in arms.items()
               if campaign_arms.digest(config, key in moved) != recorded[key]["digest"]]
    assert not changed, {key: campaign_arms.record({key: arms[key]})[key] for key in changed[:2]}
