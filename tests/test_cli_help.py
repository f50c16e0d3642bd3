"""The command line shows what it trains: its name, every subcommand, where craft_pl's own options are, and the
resolved objective and pillars of a run with no method overlay (the code's defaults: CRAFT)."""

import pytest
import yaml

from craft_pl.cli import CraftCLI, main
from craft_pl.objective import Objective
from craft_pl.pillars import craft_pillars


def _output(args, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert not stop.value.code
    return capsys.readouterr().out


def test_help_names_the_program_every_subcommand_and_the_projects_own_options(capsys):
    text = _output(["--help"], capsys)
    assert text.startswith("usage: craft_pl ") and "__main__" not in text
    assert "{fit,validate,test,export}" in text
    assert "craft_pl's own options: --model.*" in text and "--trainer.* is Lightning's" in " ".join(text.split())
    fit = _output(["fit", "--help"], capsys)
    assert fit.startswith("usage: craft_pl [options] fit") and "craft_pl's own options" in fit


def test_validate_and_test_print_no_second_table(capsys):
    """Every evaluation is printed once, in EvaluationReport's line; Lightning's results table is off by default."""
    for subcommand in ("validate", "test"):
        config = yaml.safe_load(_output([subcommand, "--config", "configs/webshop.yaml", "--print_config"], capsys))
        assert config["verbose"] is False


def test_export_is_a_subcommand_of_the_same_command(capsys):
    assert "--output_dir" in _output(["export", "--help"], capsys)


def test_print_config_without_a_method_shows_crafts_objective_and_pillars(capsys):
    config = yaml.safe_load(_output(["fit", "--config", "configs/webshop.yaml", "--print_config"], capsys))
    objective = config["model"]["objective"]
    assert objective["class_path"] == "craft_pl.objective.Objective"
    defaults = Objective()
    for key in ("pg_coef", "kl_coef", "distill_coef", "gate_beta", "clip_ratio", "entropy_coef"):
        assert objective["init_args"][key] == getattr(defaults, key), key
    assert objective["init_args"]["advantage"]["class_path"] == "craft_pl.advantages.GRPOAdvantage"
    assert [p["class_path"] for p in config["model"]["pillars"]] == [
        f"{type(p).__module__}.{type(p).__name__}" for p in craft_pillars()]
    assert all(p["init_args"]["enabled"] for p in config["model"]["pillars"])


def test_a_checkpoint_that_stored_null_method_keys_compares_as_the_explicit_defaults(capsys):
    """Checkpoints written before the defaults were explicit store ``objective: null`` and ``pillars: null``; a
    resume with the same settings must not be refused as a change."""
    cli = CraftCLI.__new__(CraftCLI)
    cli.subcommand = "fit"
    config = yaml.safe_load(_output(["fit", "--config", "configs/webshop.yaml", "--print_config"], capsys))
    cli._parser = lambda subcommand: _parser_of_fit()
    saved = {"model": {**config["model"], "objective": None, "pillars": None}, "seed_everything": 0}
    explicit = cli._explicit_method(saved)
    assert explicit["model"]["objective"] == config["model"]["objective"]
    assert explicit["model"]["pillars"] == config["model"]["pillars"]
    assert cli._explicit_method({"model": {"objective": {"x": 1}, "pillars": []}}) == {
        "model": {"objective": {"x": 1}, "pillars": []}}


def _parser_of_fit():
    cli = main(["--config", "configs/webshop.yaml"], run=False)  # run=False: one parser, no subcommands
    return cli.parser


def test_class_help_through_python_dash_m_names_the_program():
    """jsonargparse builds the class-help parser on demand from argv[0]: ``__main__.py`` must not show through."""
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "craft_pl", "fit", "--model.objective.help",
                            "craft_pl.objective.Objective"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.startswith("usage: craft_pl ") and "--model.objective.kl_coef" in shown.stdout
