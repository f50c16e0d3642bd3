"""Atomic writes: a file craft_pl writes (checkpoints, ``interrupted.ckpt``, the warm-start cache, evaluation reports)
is written whole to a temporary file in its own folder, flushed to disk, then renamed over its final name
(``os.replace``, atomic on one filesystem). A reader sees the old file or the new one, never a part; a full or
read-only disk raises ``WriteError`` (one line naming the file) and leaves the earlier file and no temporary behind.
"""

from __future__ import annotations

import errno
import io
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class WriteError(OSError):
    """A file that could not be written; the message is one line naming it, the cause and the fix."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def write_error(path: str | Path, error: OSError) -> WriteError:
    reason = error.strerror or str(error) or type(error).__name__
    name = errno.errorcode.get(error.errno or 0)
    full, denied = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG), (errno.EACCES, errno.EPERM, errno.EROFS)
    fix = ("free space on that disk or choose another folder" if error.errno in full
           else "make the folder writable or choose another one" if error.errno in denied
           else "check the folder and the disk")
    problem = f"{reason} ({name})" if name else reason
    failure = WriteError(f"cannot write {path}: {problem}; {fix}; the earlier file there, if any, is unchanged")
    failure.errno, failure.filename = error.errno, str(path)
    return failure


def atomic_write(path: str | Path, write: Callable[[io.BufferedWriter], Any] | bytes | str) -> Path:
    """Write ``path`` atomically: ``write`` is the content (bytes or text) or a function that writes to a binary file.

    Raises:
        WriteError: the folder cannot be created or written, or the disk is full (the earlier file is unchanged).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        with os.fdopen(descriptor, "wb") as file:
            if callable(write):
                write(file)
            else:
                file.write(write.encode() if isinstance(write, str) else write)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        _remove(temporary)
        raise write_error(path, error) from error
    except BaseException:
        _remove(temporary)
        raise
    return path


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda file: torch.save(obj, file))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer with ``atomic_write`` on local paths. Lightning's own writer goes through a
    temporary file in the system's temp folder and a move, which on another disk is a copy: a full disk at the
    destination leaves a truncated checkpoint under its final name. Remote URLs keep Lightning's writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()  # serialise first: a failure here leaves no file at all
        torch.save(checkpoint, buffer)
        atomic_write(path, buffer.getbuffer())


def use_atomic_checkpoints(trainer) -> None:
    """Make ``trainer`` write checkpoints with ``AtomicCheckpointIO`` when it uses Lightning's default writer (a
    strategy with its own, such as sharded FSDP, keeps it)."""
    strategy = trainer.strategy
    current = getattr(strategy, "_checkpoint_io", None)
    if current is None or type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
