"""One run per folder: two runs into one ``trainer.default_root_dir`` each get their own TensorBoard version (even
when both listed the folder before either created its version); without a logger the folder is locked, a second run
is refused in one line and a lock left by a dead process is taken over."""

import subprocess
import sys

import pytest
from lightning.pytorch.loggers import TensorBoardLogger

from craft_pl.cli import main
from craft_pl.storage.run_folder import LOCK_NAME, FolderInUse, hold_lock, release_locks
from tests.test_training_toy import TOY_ARGS


def _fit(root, cache, *extra):
    return main(["fit", *TOY_ARGS, f"--trainer.default_root_dir={root}", "--trainer.max_epochs=1",
                 f"--model.policy.warm_start.cache_dir={cache}", "--data.val_tasks=1", *extra])


@pytest.mark.slow
def test_two_runs_that_listed_the_folder_together_get_their_own_versions(tmp_path, monkeypatch):
    """Guards: both runs picked ``version_0`` when each listed the folder before the other created it (1 in 3 tries
    when started together): mixed curves, overwritten config.yaml, checkpoints and reports."""
    monkeypatch.setattr(TensorBoardLogger, "_get_next_version", lambda self: 0)  # as if both had listed it empty
    root = tmp_path / "run"
    first = _fit(root, tmp_path / "cache")
    second = _fit(root, tmp_path / "cache")
    assert first.trainer.logger.version != second.trainer.logger.version
    versions = sorted(p.name for p in (root / "lightning_logs").iterdir())
    assert versions == ["version_0", "version_1"]
    for version in versions:
        folder = root / "lightning_logs" / version
        assert (folder / "config.yaml").is_file() and len(list(folder.glob("events.out.tfevents.*"))) == 1
        assert len(list((folder / "checkpoints").glob("*.ckpt"))) == 1


def test_without_a_logger_a_second_run_into_a_folder_in_use_is_refused_in_one_line(tmp_path, capsys):
    """Guards: with ``logger: false`` both runs wrote the same folder with no warning."""
    root = tmp_path / "run"
    root.mkdir()
    (root / LOCK_NAME).write_text(f"{subprocess.os.getppid()}\n")  # a live process (pytest's parent) holds it
    with pytest.raises(SystemExit) as exit_info:
        _fit(root, tmp_path / "cache", "--trainer.logger=false")
    assert exit_info.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert f"trainer.default_root_dir={root} is in use by another run" in line and "choose another folder" in line


def test_a_lock_left_by_a_dead_process_is_taken_over_and_released_at_the_end(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / LOCK_NAME).write_text(f"{dead.pid}\n")
    _fit(root, tmp_path / "cache", "--trainer.logger=false")
    assert not (root / LOCK_NAME).exists() and list(root.rglob("*.ckpt"))


def test_the_lock_holds_this_pid_and_refuses_another_live_one(tmp_path):
    lock = hold_lock(tmp_path)
    try:
        assert lock.read_text().split()[0] == str(subprocess.os.getpid())
        lock.write_text(f"{subprocess.os.getppid()}\n")
        with pytest.raises(FolderInUse):
            hold_lock(tmp_path)
    finally:
        lock.write_text(f"{subprocess.os.getpid()}\n")
        release_locks()
    assert not lock.exists()
