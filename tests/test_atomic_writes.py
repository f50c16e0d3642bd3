"""Atomic writes: checkpoints, ``interrupted.ckpt``, the warm-start cache and evaluation reports are written to a
temporary file in their folder and renamed, so a full disk leaves the earlier file, no truncated file and no temporary;
the failure is one line naming the path (the warm start warns and goes on). A corrupt checkpoint's message names only
a checkpoint that verifies, and random damage is called damage, not code.

A full disk is simulated with ``RLIMIT_FSIZE`` (every write past the limit fails with EFBIG, as a full disk fails
with ENOSPC) or by a ``torch.save`` that writes part of the file and then raises ENOSPC.
"""

import errno
import io
import logging
import resource
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

import craft_pl.model.warm_start as warm_start
from craft_pl.storage.atomic import WriteError, atomic_write
from craft_pl.callbacks import EvaluationReport, InterruptCheckpoint
from craft_pl.checkpointing import DIGEST_KEY, CheckpointError, checkpoint_digest, load_checkpoint
from craft_pl.cli import main
from tests.test_training_toy import TOY_ARGS


@contextmanager
def full_disk(limit_bytes: int):
    """Writes past ``limit_bytes`` in any file of this process fail (EFBIG) while inside."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.startswith("tmp"))


def test_atomic_write_on_a_full_disk_keeps_the_earlier_file_and_names_the_path(tmp_path):
    """Guards the building block: the earlier file survives whole, no temporary is left, one line names the path."""
    path = tmp_path / "a.bin"
    path.write_bytes(b"old" * 100)
    with full_disk(1000), pytest.raises(WriteError) as error:
        atomic_write(path, b"x" * 5000)
    assert path.read_bytes() == b"old" * 100 and _leftovers(tmp_path) == []
    assert str(error.value).startswith(f"cannot write {path}: ") and "\n" not in str(error.value)
    assert "free space" in str(error.value)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fitted")
    cli = main(["fit", *TOY_ARGS, f"--trainer.default_root_dir={tmp / 'run'}", "--trainer.max_epochs=1",
                f"--model.policy.warm_start.cache_dir={tmp / 'cache'}", "--data.val_tasks=1"])
    (ckpt,) = (tmp / "run").rglob("*.ckpt")
    return cli, ckpt


def test_a_checkpoint_save_on_a_full_disk_keeps_the_previous_checkpoint(fitted):
    """Guards: Lightning wrote through a temporary file in /tmp and a move (a copy across disks), so a full disk left
    a truncated checkpoint under its final name and a traceback naming no file."""
    cli, ckpt = fitted
    before = ckpt.read_bytes()
    with full_disk(len(before) // 2), pytest.raises(WriteError, match=f"cannot write {ckpt}"):
        cli.trainer.save_checkpoint(ckpt)
    assert ckpt.read_bytes() == before and _leftovers(ckpt.parent) == []
    load_checkpoint(ckpt)  # still verifies


def _interrupted_trainer(root: Path):
    return SimpleNamespace(log_dir=str(root), default_root_dir=str(root), is_global_zero=True)


def test_interrupted_ckpt_on_a_full_disk_is_not_left_truncated(tmp_path, capsys):
    """Guards: SIGTERM on a full disk wrote interrupted.ckpt in place, leaving a truncated file that looked like a
    checkpoint to resume from."""
    callback = InterruptCheckpoint()
    callback._snapshot = b"s" * 50_000
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "interrupted.ckpt").write_bytes(b"earlier snapshot")
    with full_disk(10_000):
        callback.on_exception(_interrupted_trainer(tmp_path), None, SIGTERMException())
    assert (folder / "interrupted.ckpt").read_bytes() == b"earlier snapshot" and _leftovers(folder) == []
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert str(folder / "interrupted.ckpt") in line and callback.saved_path is None


def test_a_warm_start_cache_that_cannot_be_written_warns_and_training_goes_on(tmp_path, monkeypatch, caplog):
    """Guards: a full disk while caching the warm start killed the run with a torch error naming no file, losing the
    computed warm start and leaving a .tmp behind."""
    real_save = torch.save

    def save_half_then_fail(obj, file, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        if hasattr(file, "write"):
            file.write(data[: len(data) // 2])
        else:
            Path(file).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(warm_start, "behaviour_clone", lambda *args, **kwargs: [2.0, 1.0])
    monkeypatch.setattr(torch, "save", save_half_then_fail)
    settings = warm_start.WarmStart(cache_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        losses = warm_start.warm_start_weights(torch.nn.Linear(4, 4), [], settings, "key", 0, torch.Generator())
    assert losses == [2.0, 1.0]
    folder = tmp_path / "warm_start"
    assert list(folder.iterdir()) == []  # no cache, no temporary
    assert "not cached, training goes on" in caplog.text and str(folder / "key.pt") in caplog.text


def _report_trainer(root: Path, metrics: dict):
    return SimpleNamespace(log_dir=str(root), default_root_dir=str(root), is_global_zero=True, sanity_checking=False,
                           callback_metrics=metrics, state=SimpleNamespace(fn="fit"), ckpt_path=None, global_step=4,
                           current_epoch=1)


def test_an_evaluation_report_on_a_full_disk_keeps_the_earlier_report(tmp_path):
    """Guards: reports were written in place, so a full disk left a truncated JSON under the report's name."""
    path = tmp_path / "evaluation" / "val_step4.json"
    path.parent.mkdir()
    path.write_text('{"earlier": true}\n')
    metrics = {f"val/metric_{i}": torch.tensor(float(i)) for i in range(400)}
    with full_disk(2_000), pytest.raises(WriteError, match=f"cannot write {path}"):
        EvaluationReport._write(_report_trainer(tmp_path, metrics), "val", "validate")
    assert path.read_text() == '{"earlier": true}\n' and _leftovers(path.parent) == []


# ---------------------------------------------------------------------------------- corruption messages
def _valid_checkpoint(path: Path) -> None:
    checkpoint = {"state_dict": {"w": torch.ones(3)}, "craft_config": {"model": {"lr": 0.1}}}
    checkpoint[DIGEST_KEY] = checkpoint_digest(checkpoint)
    torch.save(checkpoint, path)


def test_a_corrupt_checkpoint_names_only_a_previous_checkpoint_that_verifies(tmp_path):
    """Guards: the message suggested "the previous checkpoint" even when that one was corrupt too."""
    bad, also_bad = tmp_path / "epoch=2.ckpt", tmp_path / "epoch=1.ckpt"
    bad.write_bytes(b"\x00" * 100)
    also_bad.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(bad)
    assert str(also_bad) not in str(error.value) and "no other checkpoint in its folder verifies" in str(error.value)
    good = tmp_path / "epoch=0.ckpt"
    _valid_checkpoint(good)
    with pytest.raises(CheckpointError, match=f"use the previous checkpoint in its folder instead: {good}"):
        load_checkpoint(bad)


def test_random_damage_is_called_damage_not_code(tmp_path):
    """Guards: damage that garbles a pickled name (``torch._utils._rebuil``) was reported as an object that "could run
    code"; only a name that exists is."""
    path = tmp_path / "damaged.ckpt"
    _valid_checkpoint(path)
    data = bytearray(path.read_bytes())
    at = data.find(b"_rebuild_tensor_v2")
    assert at > 0
    data[at + 8: at + 18] = b"\n" + b"\x00" * 9  # the name ends early: GLOBAL torch._utils._rebuil
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert "could run code" not in str(error.value) and "is corrupt" in str(error.value), str(error.value)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics")
def test_the_full_disk_simulation_really_fails_writes(tmp_path):
    with full_disk(100), pytest.raises(OSError):
        (tmp_path / "big").write_bytes(b"x" * 1000)


@pytest.mark.slow
def test_a_full_disk_during_a_run_is_one_line_naming_the_checkpoint_and_keeps_the_previous_one(
        tmp_path, capsys, monkeypatch):
    """Guards, end to end: the second RL step's checkpoint hits a full disk (ENOSPC when flushed): the run ends with
    one line naming that file, exit status 1, and the first step's checkpoint is intact with no temporary left."""
    import os

    import craft_pl.storage.atomic

    real_fsync = os.fsync

    def fsync(descriptor):
        if "epoch=1" in os.readlink(f"/proc/self/fd/{descriptor}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(descriptor)

    monkeypatch.setattr(craft_pl.storage.atomic.os, "fsync", fsync)
    root = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *TOY_ARGS, f"--trainer.default_root_dir={root}", "--trainer.max_epochs=2",
              f"--model.policy.warm_start.cache_dir={tmp_path / 'cache'}", "--data.val_tasks=1"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and "epoch=1" in line and "ENOSPC" in line and line.startswith("error: cannot write")
    (kept,) = root.rglob("*.ckpt")
    assert "epoch=0" in kept.name and load_checkpoint(kept)
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]
