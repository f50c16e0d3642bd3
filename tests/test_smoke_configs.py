"""Every CPU environment config has a smoke run that is one: the documented command (the environment, then
configs/smoke.yaml, then the environment's own smoke sizes where it has them) fits end to end - warm start,
validation before RL, two RL steps, validation after each - with the main command's method (CRAFT)."""

from pathlib import Path

import pytest

from craft_pl.cli import main
from tests.tb import read_scalars

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def smoke_command(env: str) -> list[str]:
    """What docs/environments.md tells a user to run for a quick check of ``configs/<env>.yaml``."""
    sizes = CONFIGS / "smoke" / f"{env}.yaml"
    return ["--config", str(CONFIGS / f"{env}.yaml"), "--config", str(CONFIGS / "smoke.yaml"),
            *(["--config", str(sizes)] if sizes.exists() else [])]


@pytest.mark.slow
@pytest.mark.parametrize("env", ["webshop", "alfworld", "search_qa"])
def test_the_smoke_command_of_each_environment_fits_end_to_end(env, tmp_path, monkeypatch):
    if env == "alfworld":
        pytest.importorskip("textworld")
    monkeypatch.setenv("CRAFT_PL_CACHE", str(tmp_path / "cache"))  # games, indexes and the warm start: fresh
    main(["fit", *smoke_command(env), f"--trainer.default_root_dir={tmp_path / 'run'}",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    scalars = read_scalars(tmp_path / "run")
    assert [step for step, _ in scalars["val/success_rate"]] == [0, 2, 4]  # optimizer steps: before RL, after each
    assert len(scalars["train/loss"]) == 4  # 2 RL steps x 2 mini-batches
    assert "pillar/cti/ess_mean" in scalars and "distill/loss" in scalars  # CRAFT, the default method


def test_smoke_sizes_change_counts_only():
    """The smoke overlays may shrink how many games or entities are built, never the task definition."""
    import yaml

    allowed = {"alfworld": {"train_games", "eval_games"}, "search_qa": {"num_entities"}}
    for path in sorted((CONFIGS / "smoke").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        assert set(config) == {"data"} and set(config["data"]) == {"env"}, path
        assert set(config["data"]["env"]["init_args"]) <= allowed[path.stem], path
