"""Evaluation results as JSON: next to the checkpoint for ``validate``/``test --ckpt_path``, else in the log dir."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from craft_pl.storage.atomic import atomic_write


class EvaluationReport(Callback):
    """Writes every evaluation's metrics (``val/*`` or ``test/*``) to a JSON file.

    ``validate``/``test`` with ``--ckpt_path X.ckpt`` write ``X.validate.json`` / ``X.test.json`` beside it; periodic
    validation during ``fit`` writes ``<log dir>/evaluation/val_step<global step>.json``.
    """

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, "val", "validate")

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, "test", "test")

    @staticmethod
    def _write(trainer: pl.Trainer, prefix: str, stage: str) -> None:
        log_dir = trainer.log_dir  # a collective under multi-process strategies: every rank asks, rank 0 writes
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix + "/")}
        if not metrics:
            return
        if trainer.state.fn != "fit" and trainer.ckpt_path:
            path = Path(trainer.ckpt_path).with_suffix(f".{stage}.json")
        else:
            path = Path(log_dir or trainer.default_root_dir) / "evaluation" / f"{prefix}_step{trainer.global_step}.json"
        report = {"stage": stage, "global_step": trainer.global_step, "rl_step": trainer.current_epoch,
                  "ckpt_path": str(trainer.ckpt_path) if trainer.ckpt_path else None, "metrics": dict(sorted(metrics.items()))}
        atomic_write(path, json.dumps(report, indent=2) + "\n")  # whole or not at all; WriteError names the path
