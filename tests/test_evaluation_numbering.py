"""Every evaluation reported once, one way (one line, one file, one step numbering), a resumed run continuing its
TensorBoard version, and docs/tensorboard.md's tag tables equal to what the default run and each method overlay log."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.loggers import TensorBoardLogger

from craft_pl.cli import continue_version, main
from craft_pl.storage.run_folder import release_locks
from tests.tb import read_scalars
from tests.test_training_toy import TOY_ARGS

REPO = Path(__file__).resolve().parent.parent
CONDITIONAL = {  # documented tags a short toy run cannot show, with the condition the docs name
    "rollout/gen_batches": "data.dynamic_sampling: true",
    "train/nonfinite_losses": "a non-finite loss",
    "val/success_rate_privileged_unreliable": "hints wrong on some tasks",
    "rollout/success_rate_reliable": "hint_reliability < 1",
    "rollout/success_rate_unreliable": "hint_reliability < 1",
    "pillar/controller/activity_target": "more RL steps than the controller's warmup_steps",
}


def _fit(tmp_path, name, extra=()):
    root = tmp_path / name
    main(["fit", *TOY_ARGS, f"--trainer.default_root_dir={root}",
          f"--model.policy.warm_start.cache_dir={tmp_path / 'cache'}", *extra])
    return root


def documented_tags() -> list[str]:
    """Backticked tags in the first column of docs/tensorboard.md's tables (not the inspector's images and
    histograms); ``<task_type>`` stands for any one path component."""
    tags, section = [], ""
    for line in (REPO / "docs" / "tensorboard.md").read_text().splitlines():
        if line.startswith("## "):
            section = line[3:]
        elif line.startswith("| `") and section != "Credit inspector":
            tags += re.findall(r"`([a-z_]+(?:/[a-z_<>]+)*)`", line.split(" | ")[0])
    return tags


def _pattern(tag: str) -> re.Pattern:
    return re.compile(re.sub(r"<[a-z_]+>", "[^/]+", re.escape(tag).replace(r"\<", "<").replace(r"\>", ">")) + "$")


def test_documented_tags_parse_and_conditional_ones_are_documented():
    tags = documented_tags()
    assert len(tags) > 50 and "val/rl_step" in tags and "rollout/success_rate/<task_type>" in tags
    assert set(CONDITIONAL) <= set(tags)
    assert _pattern("val/success_rate/<task_type>").match("val/success_rate/odd")
    assert not _pattern("val/success_rate/<task_type>").match("val/success_rate/odd/x")


def test_continue_version_takes_the_checkpoints_version(tmp_path, monkeypatch):
    monkeypatch.delenv("CRAFT_PL_LOGGER_VERSION", raising=False)
    ckpt = tmp_path / "lightning_logs" / "version_3" / "checkpoints" / "epoch=0-step=2.ckpt"
    ckpt.parent.mkdir(parents=True)
    logger = TensorBoardLogger(save_dir=str(tmp_path))
    trainer = SimpleNamespace(loggers=[logger])
    try:
        assert continue_version(trainer, str(ckpt)) and logger.version == 3
        other = TensorBoardLogger(save_dir=str(tmp_path / "elsewhere"))
        assert not continue_version(SimpleNamespace(loggers=[other]), str(ckpt)) and other._version is None
        assert not continue_version(SimpleNamespace(loggers=[]), str(ckpt))
    finally:
        release_locks()


@pytest.mark.slow
def test_each_validation_one_line_one_file_one_numbering(tmp_path, capsys):
    root = _fit(tmp_path, "run")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("validation ")]
    assert len(lines) == 3 and lines[0].startswith("validation before RL (optimizer step 0): success_rate")
    assert lines[2].startswith("validation after RL step 2 (optimizer step 4): success_rate")
    assert lines[2].endswith("val_step4.json")
    reports = {int(p.stem.removeprefix("val_step")): json.loads(p.read_text()) for p in root.rglob("val_step*.json")}
    assert sorted(reports) == [0, 2, 4]  # before RL, after RL steps 1 and 2 (2 optimizer steps each)
    for step, report in reports.items():
        assert report["global_step"] == step and report["rl_step"] == report["metrics"]["val/rl_step"] == step // 2
    scalars = read_scalars(root)
    assert [s for s, _ in scalars["val/success_rate"]] == [0, 2, 4]
    assert [(s, v) for s, v in scalars["val/rl_step"]] == [(0, 0.0), (2, 1.0), (4, 2.0)]
    assert [s for s, _ in scalars["rollout/success_rate"]] == [s for s, _ in scalars["rl_step"]] == [2, 4]


@pytest.mark.slow
def test_validate_from_a_checkpoint_numbers_like_the_fit_that_wrote_it(tmp_path, capsys):
    """Guards: validate/test do not restore the fit loop, so their report said step 0 and RL step 0."""
    root = _fit(tmp_path, "run", ["--trainer.max_epochs=1"])
    (ckpt,) = root.rglob("*.ckpt")
    capsys.readouterr()
    main(["validate", *[a for a in TOY_ARGS if "max_epochs" not in a], f"--trainer.default_root_dir={tmp_path / 'v'}",
          f"--model.policy.warm_start.cache_dir={tmp_path / 'cache'}", f"--ckpt_path={ckpt}"])
    report = json.loads(ckpt.with_suffix(".validate.json").read_text())
    assert report["global_step"] == 2 and report["rl_step"] == report["metrics"]["val/rl_step"] == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("validation ")]
    assert len(lines) == 1 and lines[0].startswith("validation after RL step 1 (optimizer step 2): success_rate")
    assert [s for s, _ in read_scalars(tmp_path / "v")["val/success_rate"]] == [2]


@pytest.mark.slow
def test_resumed_run_continues_its_tensorboard_version(tmp_path):
    root = _fit(tmp_path, "run", ["--trainer.max_epochs=1"])
    (ckpt,) = root.rglob("*.ckpt")
    _fit(tmp_path, "run", ["--trainer.max_epochs=2", f"--ckpt_path={ckpt}"])
    assert [p.name for p in (root / "lightning_logs").iterdir()] == ["version_0"]
    assert [s for s, _ in read_scalars(root)["val/rl_step"]] == [0, 2, 4]
    assert sorted(p.name for p in root.rglob("val_step*.json")) == ["val_step0.json", "val_step2.json",
                                                                   "val_step4.json"]


@pytest.mark.slow
def test_tag_tables_equal_what_the_default_and_each_method_log(tmp_path):
    logged = set(read_scalars(_fit(tmp_path, "default")))
    for overlay in sorted((REPO / "configs" / "method").glob("*.yaml")):
        logged |= set(read_scalars(_fit(tmp_path, overlay.stem, ["--config", str(overlay)])))
    documented = documented_tags()
    undocumented = sorted(tag for tag in logged if not any(_pattern(d).match(tag) for d in documented))
    assert not undocumented, f"logged but not in docs/tensorboard.md: {undocumented}"
    never = sorted(d for d in documented if d not in CONDITIONAL and not any(_pattern(d).match(t) for t in logged))
    assert not never, f"in docs/tensorboard.md but never logged: {never}"
