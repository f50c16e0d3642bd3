"""Checkpoint security and integrity: files a user may receive (checkpoints, warm-start caches) are read with
``weights_only=True`` and verified against the sha256 digest they carry; a missing, crafted or corrupt file ends the
command with one ``error:`` line naming it and the fix; a damaged warm-start cache is recomputed."""

import io
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from craft_pl.callbacks import InterruptCheckpoint
from craft_pl.checkpointing import (DIGEST_KEY, CheckpointError, digest_differences, load_checkpoint, tree_digests,
                                    verify_checkpoint)
from craft_pl.cli import main
from tests.tb import read_scalars
from tests.test_resume import _bits, _checkpoint, _fit
from tests.test_training_toy import TOY_ARGS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-RL-step run (warm start computed, not cached): its CLI, folder, checkpoint and cache folder."""
    tmp = tmp_path_factory.mktemp("trained")
    cli, root = _fit(tmp, "run", 2)
    return cli, root, _checkpoint(root), tmp / "cache"


def _args(tmp_path: Path, cache: Path) -> list[str]:
    """The arguments of the ``trained`` run (``tests.test_resume._fit``) with another output folder."""
    return [*TOY_ARGS, f"--trainer.default_root_dir={tmp_path / 'run'}", f"--model.policy.warm_start.cache_dir={cache}",
            "--model.policy.teacher=ema"]


def _error_line(text: str) -> str:
    """The one ``error:`` line of a command's stderr (and no traceback)."""
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in text, text
    return errors[0]


def _run_cli(capsys, args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    return _error_line(capsys.readouterr().err)


def _export(ckpt, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "craft_pl", "export", f"--ckpt_path={ckpt}", f"--output_dir={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


class _Payload:
    """Unpickling this calls ``os.makedirs(marker)``: what a crafted checkpoint would do with ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


def _crafted(tmp_path: Path) -> tuple[Path, Path]:
    path, marker = tmp_path / "crafted.ckpt", tmp_path / "payload-ran"
    torch.save({"state_dict": {}, "craft_config": _Payload(marker)}, path)
    return path, marker


@pytest.mark.slow
def test_a_crafted_checkpoint_does_not_run_on_export(tmp_path):
    path, marker = _crafted(tmp_path)
    done = _export(path, tmp_path / "out")
    assert done.returncode == 2 and not marker.exists()
    line = _error_line(done.stderr)
    assert f"checkpoint {path} was refused" in line and "os.makedirs" in line and "nothing in it ran" in line


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
@pytest.mark.slow
def test_a_crafted_checkpoint_does_not_run_on_fit_or_validate(tmp_path, capsys, trained, subcommand):
    path, marker = _crafted(tmp_path)
    _, _, _, cache = trained
    line = _run_cli(capsys, [subcommand, *_args(tmp_path, cache), f"--ckpt_path={path}"])
    assert not marker.exists()
    assert f"checkpoint {path} was refused" in line


def test_a_missing_ckpt_path_is_one_line_naming_the_file_and_the_fix(tmp_path, capsys, trained):
    missing = tmp_path / "checkpoints" / "epoch=9-step=20.ckpt"
    line = _run_cli(capsys, ["fit", *_args(tmp_path, trained[3]), f"--ckpt_path={missing}"])
    assert f"no checkpoint at {missing}" in line and "pass --ckpt_path" in line


def _flip_bytes_inside(path: Path, tensor: torch.Tensor) -> None:
    """Flip 16 bytes in the middle of ``tensor``'s data in the checkpoint file (the zip stores tensors raw)."""
    raw = tensor.contiguous().view(torch.uint8).numpy().tobytes()
    data = bytearray(path.read_bytes())
    start = data.find(raw[:64])
    assert start >= 0 and data.find(raw[:64], start + 1) < 0
    for offset in range(start + 32, start + 48):
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.fixture
def corrupt(tmp_path, trained):
    """A copy of the trained checkpoint with 16 flipped bytes in a LoRA weight, next to an older intact one."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    previous, bad = folder / "epoch=0-step=2.ckpt", folder / "epoch=1-step=4.ckpt"
    shutil.copy(trained[2], previous)
    os.utime(previous, (time.time() - 60, time.time() - 60))
    shutil.copy(trained[2], bad)
    state = torch.load(bad, map_location="cpu", weights_only=True)["state_dict"]
    key = next(k for k in state if "lora_A" in k)
    _flip_bytes_inside(bad, state[key])
    return bad, previous, key


def _assert_corrupt_line(line: str, corrupt) -> None:
    bad, previous, key = corrupt
    assert line.startswith(f"error: checkpoint {bad} is corrupt: 1 of ")
    assert f"state_dict[{key!r}]" in line and f"use the previous checkpoint in its folder instead: {previous}" in line


@pytest.mark.parametrize("subcommand", ["fit", "validate"])
def test_flipped_bytes_in_a_tensor_stop_resume_and_validate_with_one_line(tmp_path, capsys, trained, corrupt,
                                                                           subcommand):
    args = [subcommand, *_args(tmp_path, trained[3]), f"--ckpt_path={corrupt[0]}", "--trainer.max_epochs=3"]
    _assert_corrupt_line(_run_cli(capsys, args), corrupt)


@pytest.mark.slow
def test_flipped_bytes_in_a_tensor_stop_export_with_one_line(tmp_path, corrupt):
    done = _export(corrupt[0], tmp_path / "out")
    assert done.returncode == 2 and not (tmp_path / "out" / "export.json").exists()
    _assert_corrupt_line(_error_line(done.stderr), corrupt)


def test_the_module_verifies_on_load_through_the_python_api_too(tmp_path, trained, corrupt):
    cli = main([*_args(tmp_path, trained[3]), "--trainer.max_epochs=3"], run=False)
    with pytest.raises(CheckpointError, match=f"checkpoint {corrupt[0]} is corrupt"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=corrupt[0])


def test_every_checkpoint_and_the_interrupt_snapshot_carry_a_digest_and_old_ones_load_with_a_warning(
        tmp_path, trained, caplog):
    cli, _, ckpt, _ = trained
    assert set(load_checkpoint(ckpt)[DIGEST_KEY]["sections"]) >= {"state_dict", "optimizer_states", "craft_pillars"}
    (snapshot_callback,) = [c for c in cli.trainer.callbacks if isinstance(c, InterruptCheckpoint)]
    snapshot = torch.load(io.BytesIO(snapshot_callback._snapshot), map_location="cpu", weights_only=True)
    verify_checkpoint(snapshot, "interrupted.ckpt")
    assert DIGEST_KEY in snapshot
    old = tmp_path / "old.ckpt"
    torch.save({k: v for k, v in snapshot.items() if k != DIGEST_KEY}, old)
    with caplog.at_level(logging.WARNING):
        assert "state_dict" in load_checkpoint(old)
    assert f"checkpoint {old} has no integrity digest" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_damaged_warm_start_cache_is_recomputed_with_a_warning_and_the_same_result(tmp_path, trained, caplog,
                                                                                       damage):
    uncached_cli, uncached_root, _, cache = trained
    shutil.copytree(cache, tmp_path / "cache")
    (cached,) = (tmp_path / "cache" / "warm_start").glob("*.pt")
    data = cached.read_bytes()
    if damage == "truncated":
        cached.write_bytes(data[: len(data) // 2])
    else:
        state = torch.load(cached, map_location="cpu", weights_only=True)["state_dict"]
        _flip_bytes_inside(cached, max(state.values(), key=lambda tensor: tensor.numel()))
    with caplog.at_level(logging.WARNING):
        cli, root = _fit(tmp_path, "rerun", 2)
    assert f"warm start: discarding the cached weights {cached}" in caplog.text
    assert _cache_verifies(cached)  # rewritten whole
    assert _bits([v for _, v in read_scalars(root)["train/loss"]]) == \
        _bits([v for _, v in read_scalars(uncached_root)["train/loss"]])
    expected = uncached_cli.model.policy.model.state_dict()
    for key, value in cli.model.policy.model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def _cache_verifies(path: Path) -> bool:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    return not digest_differences(saved["digest"], tree_digests({k: saved[k] for k in ("state_dict", "losses")}))
