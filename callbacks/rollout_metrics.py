"""Logs what the RL step's rollouts did: success, score, valid actions, turns, environment errors, timings."""

from __future__ import annotations

import lightning.pytorch as pl


class RolloutMetrics(pl.Callback):
    """Writes ``rollout/*`` and ``timing/rollout_s`` once per RL step, at the step's first optimizer step."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx != 0:  # the step's rollout ran when its first mini-batch was fetched
            return
        stats = getattr(trainer.datamodule, "last_rollout_stats", None)
        if stats and trainer.logger is not None:
            trainer.logger.log_metrics(stats, step=trainer.global_step)
        if stats and trainer.progress_bar_callback is not None:
            pl_module.print(
                f"RL step {trainer.current_epoch}: success {stats['rollout/success_rate']:.3f} "
                f"score {stats['rollout/score']:.3f} valid {stats['rollout/valid_action_ratio']:.3f} "
                f"turns {stats['rollout/turns']:.2f} rollout {stats['timing/rollout_s']:.1f}s"
            )
