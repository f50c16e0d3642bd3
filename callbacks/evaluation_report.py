"""Every evaluation reported once, one way: one printed line and one JSON file, numbered like TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from craft_pl.storage.atomic import atomic_write

STAGE_WORDS = {"validate": "validation", "test": "test"}


class EvaluationReport(Callback):
    """Prints every evaluation's metrics (``val/*`` or ``test/*``) in one line and writes them to a JSON file.

    The validation before RL (``model.validate_at_start``) is ``<log dir>/evaluation/val_step0.json``; periodic
    validation during ``fit`` writes ``<log dir>/evaluation/val_step<global step>.json``, logged to TensorBoard at
    that same global step; each file holds ``global_step`` and ``rl_step`` (= ``val/rl_step``, the RL steps the
    evaluation follows). ``validate``/``test`` with ``--ckpt_path X.ckpt`` write ``X.validate.json`` /
    ``X.test.json`` beside it.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        start = getattr(pl_module, "evaluation_at_start", None)  # the module's validation before RL, in on_train_start
        if start is not None:
            pl_module.evaluation_at_start = None
            self._report(trainer, pl_module, "val", "validate", start)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, pl_module, "val", "validate", trainer.callback_metrics)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer, pl_module, "test", "test", trainer.callback_metrics)

    @classmethod
    def _report(cls, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str, stage: str, values) -> None:
        written = cls._write(trainer, prefix, stage, values)
        if written is not None:
            path, rl_step, metrics = written
            shown = ", ".join(f"{key.split('/', 1)[1]} {value:.3f}" for key, value in metrics.items()
                              if key.count("/") == 1 and key != f"{prefix}/rl_step")
            when = f"after RL step {rl_step}" if rl_step else "before RL"
            step = getattr(pl_module, "evaluated_step", trainer.global_step)
            pl_module.print(f"{STAGE_WORDS[stage]} {when} (optimizer step {step}): {shown} -> {path}")

    @staticmethod
    def _write(trainer: pl.Trainer, prefix: str, stage: str, values=None) -> tuple[Path, int, dict] | None:
        """Write the report of ``values`` (default: the trainer's callback metrics) on rank 0; returns its path,
        RL step and metrics (None where nothing was written)."""
        log_dir = trainer.log_dir  # a collective under multi-process strategies: every rank asks, rank 0 writes
        if not trainer.is_global_zero or trainer.sanity_checking:
            return None
        values = trainer.callback_metrics if values is None else values
        metrics = {k: float(v) for k, v in values.items() if k.startswith(prefix + "/")}
        if not metrics:
            return None
        if trainer.state.fn != "fit" and trainer.ckpt_path:
            path = Path(trainer.ckpt_path).with_suffix(f".{stage}.json")
        else:
            path = Path(log_dir or trainer.default_root_dir) / "evaluation" / f"{prefix}_step{trainer.global_step}.json"
        rl_step = int(round(metrics.get(f"{prefix}/rl_step", trainer.current_epoch)))
        step = getattr(getattr(trainer, "lightning_module", None), "evaluated_step", trainer.global_step)
        report = {"stage": stage, "global_step": step, "rl_step": rl_step,
                  "ckpt_path": str(trainer.ckpt_path) if trainer.ckpt_path else None, "metrics": dict(sorted(metrics.items()))}
        atomic_write(path, json.dumps(report, indent=2) + "\n")  # whole or not at all; WriteError names the path
        return path, rl_step, metrics
