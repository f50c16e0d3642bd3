"""Ctrl-C or SIGTERM during an RL step leaves a resumable checkpoint of the last completed RL step."""

from __future__ import annotations

import io
import logging
import signal
import sys
import threading
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from craft_pl.storage.atomic import WriteError, atomic_write, use_atomic_checkpoints
from craft_pl.rollout.watchdog import clear_stop, request_stop

log = logging.getLogger(__name__)

interrupts: set[str] = set()
"""The signals that stopped the current command ("SIGINT", "SIGTERM"): ``craft_pl.cli.main`` turns them into its exit
status (130, 143), since Lightning ends a Ctrl-C with ``sys.exit(1)`` and a SIGTERM with a code-less ``SystemExit``."""


class InterruptCheckpoint(Callback):
    """Keeps the checkpoint of the last completed RL step in memory and writes it when training is interrupted.

    An RL step is the unit of exact resume: a half-done step has consumed rollouts and moved the weights part of the
    way. So on ``KeyboardInterrupt`` or SIGTERM this writes ``interrupted.ckpt`` holding the state at the end of the
    last completed step (or nothing before the first one completes); ``fit --ckpt_path .../interrupted.ckpt`` goes on
    from there as if never stopped. The module finishes its step (pillar updates) after the last mini-batch, before
    this epoch-end hook. The snapshot is the serialised checkpoint (adapters only under LoRA, so it is small).
    """

    FILENAME = "interrupted.ckpt"

    def __init__(self, enabled: bool = True) -> None:
        """
        Args:
            enabled: Snapshot every RL step and save on interrupt (disable for very large fully fine-tuned models).
        """
        self.enabled = enabled
        self._snapshot: bytes | None = None
        self.saved_path: Path | None = None
        self._stop_requested = False
        self._previous_sigint = None
        self._previous_sigterm = None

    # Ctrl-C: a KeyboardInterrupt raised at an arbitrary bytecode can land in a finalizer or a loader's cleanup,
    # where Python prints it and carries on. So the first Ctrl-C only asks to stop; the stop is raised at the next
    # mini-batch end, where Lightning's interrupt handling (and ``on_exception`` below) runs. A second one stops now.
    # The first Ctrl-C and SIGTERM (which Lightning only notes, for the next batch end) also request a stop from the
    # environment watchdog (``craft_pl.rollout.watchdog``): an environment call that is waited on, even a hung one,
    # raises at once, so a rollout that never ends still stops through the same interrupt path.
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_requested = False
        clear_stop()
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Wrap Lightning's SIGTERM handler, registered after ``on_fit_start`` (and restored by Lightning at the end
        of fit); the module's first evaluation runs after this hook. Also when disabled: a hung call must still stop."""
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGTERM) != self._on_sigterm:
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        interrupts.add("SIGTERM")
        request_stop(SIGTERMException)
        if callable(self._previous_sigterm):
            self._previous_sigterm(signum, frame)

    def _on_sigint(self, signum, frame) -> None:
        if self._stop_requested:
            signal.signal(signal.SIGINT, self._previous_sigint or signal.default_int_handler)
            raise KeyboardInterrupt
        self._stop_requested = True
        interrupts.add("SIGINT")
        request_stop(KeyboardInterrupt)
        print("\nCtrl-C: stopping after this mini-batch or environment call and saving the last completed RL step "
              "(press Ctrl-C again to stop at once)", flush=True)

    def _stop_if_requested(self) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._stop_if_requested()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._stop_if_requested()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        clear_stop()
        if threading.current_thread() is not threading.main_thread():
            return
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None
        if self._previous_sigterm is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_sigterm = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Lightning saves a checkpoint after validation when validation ends an epoch, which is before the epoch
        counts as done: resuming from it would redo that RL step with new rollouts. Checkpoints whose timing is left
        to Lightning are moved to the end of the RL step instead, so that every checkpoint resumes exactly."""
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback._save_on_train_epoch_end is None:
                callback._save_on_train_epoch_end = True
        use_atomic_checkpoints(trainer)  # every checkpoint is written whole, then renamed into place

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        buffer = io.BytesIO()
        torch.save(trainer._checkpoint_connector.dump_checkpoint(weights_only=False), buffer)
        self._snapshot = buffer.getvalue()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        clear_stop()  # the stop is under way; a later run in this process starts clean
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            interrupts.add("SIGTERM" if isinstance(exception, SIGTERMException) else "SIGINT")
        if not self.enabled or not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        if self._snapshot is None:
            log.warning("interrupted before the first RL step completed: nothing to save")
            return
        log_dir = trainer.log_dir  # a collective under multi-process strategies: every rank asks
        if trainer.is_global_zero:
            directory = Path(log_dir or trainer.default_root_dir) / "checkpoints"
            path = directory / self.FILENAME
            try:
                atomic_write(path, self._snapshot)  # a full disk leaves the earlier file, never a truncated one
            except WriteError as error:
                print(f"error: could not save the last completed RL step: {error}", file=sys.stderr, flush=True)
                return
            self.saved_path = path
            print(f"interrupted: saved the last completed RL step to {self.saved_path}; resume with "
                  f"`python -m craft_pl fit --config <same configs> --ckpt_path {self.saved_path}`", flush=True)
