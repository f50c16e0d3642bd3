"""A checkpoint is data: ``export`` rebuilds from a checkpoint's stored configuration importing only craft_pl's own
classes (unless ``--config`` or ``--trust_config_classes``), never trains (the warm start comes from the cache),
bounds the model and warm start before allocating, refuses non-finite or misshapen weights, and ends every malformed
stored configuration with one ``error:`` line."""

import sys

import pytest
import torch

import craft_pl.model
from craft_pl.checkpointing import DIGEST_KEY, checkpoint_digest
from craft_pl.cli import main
from craft_pl.tools.export import main as export_main
from tests.test_training_toy import TOY_ARGS


def _save(path, checkpoint: dict, digest: bool = True):
    checkpoint = {key: value for key, value in checkpoint.items() if key != DIGEST_KEY}
    if digest:
        checkpoint[DIGEST_KEY] = checkpoint_digest(checkpoint)
    torch.save(checkpoint, path)
    return path


def _export_error(capsys, monkeypatch, ckpt, out, *extra) -> str:
    """Run ``export`` in this process; it must fail with exit 2 and one ``error:`` line, building no model."""
    monkeypatch.setattr(craft_pl.model.Policy, "build", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(SystemExit) as exit_info:
        export_main([f"--ckpt_path={ckpt}", f"--output_dir={out}", *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


PAYLOAD = "import pathlib\npathlib.Path(__file__).with_name('payload-ran').touch()\nclass Env: pass\n"


@pytest.mark.parametrize("env", [{"class_path": "shipped_payload.Env"}, "shipped_payload.Env"])
def test_a_stored_class_path_outside_craft_pl_is_not_imported(tmp_path, capsys, monkeypatch, env):
    """Guards: a ``.py`` shipped next to the checkpoint and named as ``data.env.class_path`` ran its module code on
    export, exit 0, no warning (``this.Nope`` printed the Zen of Python)."""
    (tmp_path / "shipped_payload.py").write_text(PAYLOAD)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ckpt = _save(tmp_path / "run.ckpt", {"state_dict": {"w": torch.ones(2)}, "craft_config": {"data": {"env": env}}})
    line = _export_error(capsys, monkeypatch, ckpt, tmp_path / "out")
    assert not (tmp_path / "payload-ran").exists() and "shipped_payload" not in sys.modules
    assert "shipped_payload.Env" in line and "--config" in line and "--trust_config_classes" in line


def _deep(depth: int) -> dict:
    config: dict = {"leaf": 1}
    for _ in range(depth):
        config = {"a": config}
    return config


@pytest.mark.parametrize("config, words", [
    ("model: {lr: 0.1}", ["holds no craft_pl run configuration", "str"]),
    (None, ["holds no craft_pl run configuration"]),
    ({"model": {"policy": {"init_args": {"tiny": {"vocab_size": 4_000_000, "hidden_size": 16_384}}}}},
     ["built-in model of", "parameters"]),
    ({"model": {"policy": {"init_args": {"warm_start": {"num_demos": 10**9, "steps": 10**9}}}}},
     ["1000000000 warm-start demonstrations"]),
    ({"model": {"policy": {"init_args": {"tiny": {"vocab_size": "many"}}}}}, ["vocab_size is 'many'"]),
    ({"model": {"no_such_key": 1}}, ["stored configuration cannot be rebuilt", "no_such_key"]),
])
def test_a_malformed_stored_config_is_one_error_line(tmp_path, capsys, monkeypatch, config, words):
    """Guards: a string config, a 4M x 16k model, a 1e9-step warm start or an unknown key gave tracebacks, started
    allocating or training."""
    ckpt = _save(tmp_path / "run.ckpt", {"state_dict": {"w": torch.ones(2)}, "craft_config": config})
    line = _export_error(capsys, monkeypatch, ckpt, tmp_path / "out")
    assert all(word in line for word in words), line


@pytest.mark.parametrize("digest", [True, False])
def test_a_5000_deep_stored_config_is_one_error_line(tmp_path, capsys, monkeypatch, digest):
    """Guards: a 5,000-deep configuration ended in a RecursionError traceback."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(60_000)
    try:
        ckpt = _save(tmp_path / "run.ckpt", {"state_dict": {"w": torch.ones(2)}, "craft_config": _deep(5000)}, digest)
    finally:
        sys.setrecursionlimit(limit)
    line = _export_error(capsys, monkeypatch, ckpt, tmp_path / "out")
    assert "nest" in line, line


def test_non_finite_weights_are_refused(tmp_path, capsys, monkeypatch):
    """Guards: NaN weights were exported with exit 0."""
    ckpt = _save(tmp_path / "run.ckpt", {"state_dict": {"lora_A": torch.tensor([1.0, float("nan")])},
                                         "craft_config": {"model": {"lr": 0.1}}})
    line = _export_error(capsys, monkeypatch, ckpt, tmp_path / "out")
    assert "state_dict['lora_A']" in line and "non-finite" in line


# ---------------------------------------------------------------- with a real checkpoint of the toy run
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    main(["fit", *TOY_ARGS, f"--trainer.default_root_dir={tmp / 'run'}", "--trainer.max_epochs=1",
          f"--model.policy.warm_start.cache_dir={tmp / 'cache'}", "--data.val_tasks=1"])
    (ckpt,) = (tmp / "run").rglob("*.ckpt")
    return ckpt, tmp / "cache"


def _export(tmp_path, ckpt, *extra):
    export_main([f"--ckpt_path={ckpt}", f"--output_dir={tmp_path / 'out'}", *extra])
    return (tmp_path / "out" / "export.json").is_file()


def test_a_checkpoint_of_a_test_environment_needs_an_explicit_opt_in(tmp_path, capsys, trained):
    ckpt, _ = trained
    with pytest.raises(SystemExit):
        _export(tmp_path, ckpt)
    assert "tests.toy_env.PickWordEnv" in capsys.readouterr().err
    assert _export(tmp_path, ckpt, "--trust_config_classes")


def test_export_never_trains_a_missing_warm_start(tmp_path, capsys, trained, monkeypatch):
    """Guards: export recomputed a missing warm start (whatever steps the stored configuration asked for) and wrote
    the cache where it said."""
    ckpt, cache = trained
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["craft_config"]["model"]["policy"]["init_args"]["warm_start"]["cache_dir"] = str(tmp_path / "empty")
    moved = _save(tmp_path / "moved.ckpt", checkpoint)
    monkeypatch.setattr(craft_pl.model.warm_start, "behaviour_clone", lambda *a, **k: pytest.fail("export trained"))
    with pytest.raises(SystemExit) as exit_info:
        _export(tmp_path, moved, "--trust_config_classes")
    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert "not in the cache" in line and "--recompute_warm_start" in line
    assert not (tmp_path / "empty").exists()


def test_a_weight_of_the_wrong_shape_is_one_error_line(tmp_path, capsys, trained):
    """Guards: a wrong tensor shape ended in torch's size-mismatch traceback."""
    ckpt, _ = trained
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    key = next(k for k in checkpoint["state_dict"] if "lora_A" in k)
    checkpoint["state_dict"][key] = torch.zeros(3, 5)
    bad = _save(tmp_path / "bad.ckpt", checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        _export(tmp_path, bad, "--trust_config_classes")
    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert key in line and "(3, 5)" in line


def test_resuming_from_a_checkpoint_with_a_5000_deep_config_is_one_error_line(tmp_path, capsys, monkeypatch):
    """Guards: ``fit --ckpt_path`` compared a digest-less checkpoint's 5,000-deep configuration with a recursive walk:
    a RecursionError traceback."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(60_000)
    try:
        ckpt = _save(tmp_path / "run.ckpt", {"state_dict": {"w": torch.ones(2)}, "craft_config": _deep(5000)}, False)
    finally:
        sys.setrecursionlimit(limit)
    monkeypatch.setattr(craft_pl.model.Policy, "build", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *TOY_ARGS, f"--trainer.default_root_dir={tmp_path / 'run'}", f"--ckpt_path={ckpt}"])
    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert f"checkpoint {ckpt} holds a malformed run configuration" in line and "nests deeper" in line
