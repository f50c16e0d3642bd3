"""Every config parses; overlays compose; bad input fails at parse time, before any model loads."""

from pathlib import Path

import pytest
import yaml

from craft_pl.cli import main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
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
    if "objective" in expected.get("model", {}):
        assert resolved["model"]["objective"] == expected["model"]["objective"]
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


def test_craft_differs_from_sdar_only_by_its_pillars():
    craft = yaml.safe_load((CONFIGS / "method" / "craft.yaml").read_text())["model"]
    sdar = yaml.safe_load((CONFIGS / "method" / "sdar.yaml").read_text())["model"]
    assert craft.pop("pillars") and sdar.pop("pillars") == []
    assert craft == sdar
    for ablation in CONFIGS.glob("ablations/*.yaml"):
        model = yaml.safe_load(ablation.read_text())["model"]
        assert len(model.pop("pillars")) == 3 and model == sdar, ablation.name
