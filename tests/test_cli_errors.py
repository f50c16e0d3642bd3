"""User errors end in one line that names the key (or file) and the fix, exit code 2, no traceback, no model built."""

import os
from pathlib import Path

import pytest

import craft_pl.model
from craft_pl.cli import main, non_finite_values

WEBSHOP = str(Path(__file__).resolve().parent.parent / "configs" / "webshop.yaml")


def one_error_line(capsys, monkeypatch, args: list[str]) -> str:
    """``fit`` with ``args`` must stop with exit code 2 and exactly one ``error:`` line (returned), no traceback and
    no model built."""
    monkeypatch.setattr(craft_pl.model.Policy, "build", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _fails_in_one_line(capsys, monkeypatch, *extra) -> str:
    return one_error_line(capsys, monkeypatch, ["--config", WEBSHOP, *extra])


@pytest.mark.parametrize("args, key, fix", [
    (["--model.lr", ".inf"], "model.lr=inf", "finite"),
    (["--data.temperature", ".nan"], "data.temperature=nan", "finite"),
    (["--model.objective.init_args.gate_beta=-.inf"], "gate_beta=-inf", "finite"),
    (["--model.adam_betas", "[2, 0.5]"], "model.adam_betas", "[0, 1)"),
    (["--model.weight_decay", "-0.1"], "model.weight_decay", ">= 0"),
    (["--data.group_size", "1"], "data.group_size=1", ">= 2"),
    (["--data.env.init_args.num_products", "0"], "num_products=0", "int >= 20"),
    (["--data.env.init_args.privileged", "oracle"], "privileged='oracle'", "use one of"),
    (["--data.env.init_args.max_turns", "0"], "max_turns=0", "int >= 1"),
])
def test_bad_values_fail_in_one_line_naming_the_key_and_the_fix(capsys, monkeypatch, args, key, fix):
    line = _fails_in_one_line(capsys, monkeypatch, *args)
    assert key in line and fix in line, line


def test_a_distilling_method_on_an_environment_without_privileged_context_fails_before_the_model(capsys, monkeypatch):
    line = _fails_in_one_line(capsys, monkeypatch, "--data.env", "tests.toy_env.NoHintEnv")
    assert "distill_coef" in line and "grpo.yaml" in line, line


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; the check is exercised through a file path")
def test_an_unwritable_root_dir_fails_in_one_line(capsys, monkeypatch, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    line = _fails_in_one_line(capsys, monkeypatch, "--trainer.default_root_dir", str(locked / "run"))
    assert "trainer.default_root_dir" in line and "write" in line


def test_a_root_dir_that_is_a_file_fails_in_one_line(capsys, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    line = _fails_in_one_line(capsys, monkeypatch, "--trainer.default_root_dir", str(blocker / "run"))
    assert "trainer.default_root_dir" in line and "choose a folder" in line


def test_non_finite_values_are_found_anywhere_in_a_nested_config():
    tree = {"a": 1.0, "b": {"c": float("nan"), "d": [0.5, float("inf")]}, "e": "inf"}
    assert [key for key, _ in non_finite_values(tree)] == ["b.c", "b.d[1]"]


def test_a_missing_corpus_file_fails_in_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(craft_pl.model.Policy, "build", lambda *a, **k: pytest.fail("a model was built"))
    config = str(Path(WEBSHOP).parent / "search_qa.yaml")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config, f"--data.env.init_args.corpus_file={tmp_path / 'missing.jsonl'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "corpus_file" in line and "missing.jsonl" in line and "no such file" in line, line
