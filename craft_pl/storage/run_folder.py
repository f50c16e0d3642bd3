"""One run per folder. Two runs started together with the same ``trainer.default_root_dir`` used to pick the same
TensorBoard ``version_N`` (each listed the folder before either created its version), mixing curves and overwriting
each other's configuration, checkpoints and reports.

- With a logger that numbers versions (TensorBoard, CSV) and no version given, the run claims its version by creating
  the ``version_N`` folder itself (``mkdir`` is atomic: one creator wins, the other takes the next number).
- Without such a logger (``trainer.logger: false``) everything goes straight into ``default_root_dir``: the run holds
  ``<default_root_dir>/.craft_pl.lock`` (its pid) and a second run into it is refused in one line; a lock left by a
  process that no longer runs is taken over.
"""

from __future__ import annotations

import atexit
import os
import re
from pathlib import Path

LOCK_NAME = ".craft_pl.lock"
VERSION_ENV = "CRAFT_PL_LOGGER_VERSION"
"""The version the first process claimed, inherited by the processes a multi-process strategy launches."""


class FolderInUse(RuntimeError):
    """Another live run writes into this folder; the message is one line naming it, the pid and the fix."""


def _is_first_process() -> bool:
    return all(os.environ.get(name, "0") in ("", "0") for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def claim_version(logger) -> int | None:
    """Give ``logger`` (TensorBoard or CSV, version unset) a ``version_N`` folder of its own; returns N (None when the
    logger is of another kind or its version was given)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if not isinstance(logger, (TensorBoardLogger, CSVLogger)) or logger._version is not None:
        return None
    inherited = os.environ.get(VERSION_ENV)
    if inherited is not None and not _is_first_process():
        logger._version = int(inherited)
        return logger._version
    root = Path(logger.root_dir)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(match.group(1)) for entry in root.iterdir()
             if entry.is_dir() and (match := re.fullmatch(r"version_(\d+)", entry.name))]
    number = max(taken, default=-1) + 1
    while True:
        try:
            (root / f"version_{number}").mkdir()
            break
        except FileExistsError:  # another run created it between the listing and now
            number += 1
    logger._version = number
    os.environ[VERSION_ENV] = str(number)
    return number


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


_held: list[Path] = []


def hold_lock(folder: str | Path) -> Path:
    """Create ``folder/.craft_pl.lock`` holding this pid (taking over one whose process is gone).

    Raises:
        FolderInUse: a live process holds the lock.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    for _ in range(3):
        try:
            descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                owner = int(lock.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                owner = None  # being written right now, or garbage: garbage is taken over below
            if owner is not None and owner != os.getpid() and _alive(owner):
                raise FolderInUse(
                    f"trainer.default_root_dir={folder} is in use by another run (pid {owner}, lock {lock}); choose "
                    "another folder, wait for that run, or log with TensorBoard (each run gets its own version)"
                ) from None
            if owner == os.getpid():
                break
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(descriptor, "w") as file:
            file.write(f"{os.getpid()}\n")
        break
    _held.append(lock)
    return lock


def release_locks() -> None:
    """Remove the locks this process holds (at the end of the command, and at exit)."""
    while _held:
        lock = _held.pop()
        try:
            if int(lock.read_text().split()[0]) == os.getpid():
                lock.unlink()
        except (OSError, ValueError, IndexError):
            pass


atexit.register(release_locks)


def claim_run_folder(trainer) -> None:
    """Make this run the only one writing where it writes: its own logger version, else the folder's lock."""
    if any(claim_version(logger) is not None for logger in trainer.loggers):
        return
    if not trainer.loggers and _is_first_process():
        hold_lock(trainer.default_root_dir)
