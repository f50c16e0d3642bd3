"""``CraftModule``: owns the policy and the objective; one training step = one mini-batch = one optimizer step.

No environment code and no generation loop here: rollouts come from ``RolloutDataModule``.
"""

from __future__ import annotations

import logging
import math
import time

import lightning.pytorch as pl
import torch

from craft_pl.objective import Objective
from craft_pl.policy import Policy
from craft_pl.rollout.batch import RolloutBatch
from craft_pl.rollout.collector import Trajectory
from craft_pl.rollout.stats import episode_stats
from craft_pl.seeding import run_seed

log = logging.getLogger(__name__)


class CraftModule(pl.LightningModule):
    """Self-distilled agentic RL on a causal-LM policy."""

    def __init__(
        self,
        policy: Policy,
        objective: Objective | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        grad_clip: float = 1.0,
        micro_batch_size: int | None = None,
        validate_at_start: bool = True,
        max_nonfinite_steps: int = 3,
    ) -> None:
        """
        Args:
            policy: The language-model policy (built in ``configure_model``, never at parse time).
            objective: The loss (default: GRPO with verl-agent's settings).
            lr: AdamW learning rate of the RL update.
            weight_decay: AdamW weight decay.
            adam_betas: AdamW betas.
            grad_clip: Clip the global gradient norm to this (0 = no clipping); ``train/grad_norm`` is pre-clip.
            micro_batch_size: Rows per forward/backward inside a mini-batch (None = the whole mini-batch at once).
            validate_at_start: Evaluate the (warm-started) policy before the first RL step, logged at step 0.
            max_nonfinite_steps: Consecutive non-finite losses tolerated (each skipped) before training stops.
        """
        super().__init__()
        if not lr > 0:
            raise ValueError(f"model.lr must be > 0, got {lr}")
        if micro_batch_size is not None and micro_batch_size < 1:
            raise ValueError(f"model.micro_batch_size must be >= 1 or null, got {micro_batch_size}")
        self.policy = policy
        self.objective = objective or Objective()
        self.lr = lr
        self.weight_decay = weight_decay
        self.adam_betas = tuple(adam_betas)
        if grad_clip < 0:
            raise ValueError(f"model.grad_clip must be >= 0, got {grad_clip}")
        self.grad_clip = grad_clip
        self.micro_batch_size = micro_batch_size
        self.validate_at_start = validate_at_start
        self.max_nonfinite_steps = max_nonfinite_steps
        self.automatic_optimization = False
        self._nonfinite_in_a_row = 0
        self._validation_trajectories: list[Trajectory] = []
        self._epoch_started = 0.0

    # ------------------------------------------------------------------ building
    def configure_model(self) -> None:
        if self.policy.is_built:
            return
        datamodule = self.trainer.datamodule
        seed = run_seed()
        demonstrations, corpus = None, []
        if self.policy.warm_start is not None or self.policy.needs_corpus:
            count = self.policy.warm_start.num_demos if self.policy.warm_start else 200
            demonstrations = datamodule.demonstrations(count)
            corpus = [prompt + response for prompt, response in demonstrations]
        self.policy.build(corpus, demonstrations if self.policy.warm_start else None, seed)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.policy.trainable_parameters(), lr=self.lr, betas=self.adam_betas,
                                 weight_decay=self.weight_decay)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        """Batches hold token-id lists and trajectories; tensors move to the model's device where they are used."""
        return batch

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()

    def training_step(self, batch: RolloutBatch, batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        rows = batch.num_rows
        size = self.micro_batch_size or rows
        total_loss = torch.zeros(())
        parts: dict[str, torch.Tensor] = {}
        for start in range(0, rows, size):
            micro = batch.select(torch.arange(start, min(rows, start + size)))
            micro.num_tokens = batch.num_tokens
            logp, entropy, _ = self.policy.token_logprobs(micro.prompt_ids, micro.response_ids, "policy",
                                                          with_entropy=True)
            terms = self.objective.terms(micro, logp, entropy)
            loss, metrics = self.objective.compose(terms)
            if not torch.isfinite(loss):
                return self._skip_nonfinite(loss, batch_idx)
            self.manual_backward(loss)
            total_loss = total_loss + loss.detach()
            for key, value in metrics.items():  # token-means over the mini-batch's count: micro parts add up
                parts[key] = parts.get(key, 0) + value
        self._nonfinite_in_a_row = 0
        grad_norm = self._clip_and_step(optimizer)
        self.log("train/loss", total_loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=rows)
        for key, value in parts.items():
            self.log(f"train/{key}", value, on_step=True, on_epoch=False, batch_size=rows)
        self.log("train/grad_norm", grad_norm, on_step=True, on_epoch=False, batch_size=rows)
        return total_loss

    def _clip_and_step(self, optimizer) -> torch.Tensor:
        clip = self.grad_clip
        parameters = self.policy.trainable_parameters()
        if clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters if p.grad is not None])
        optimizer.step()
        return grad_norm.detach()

    def _skip_nonfinite(self, loss: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self._nonfinite_in_a_row += 1
        log.warning("non-finite loss %s at epoch %d mini-batch %d: update skipped (%d in a row)", loss.item(),
                    self.current_epoch, batch_idx, self._nonfinite_in_a_row)
        self.log("train/nonfinite_losses", float(self._nonfinite_in_a_row), on_step=True, on_epoch=False)
        self.optimizers().zero_grad(set_to_none=True)
        if self._nonfinite_in_a_row > self.max_nonfinite_steps:
            raise FloatingPointError(
                f"{self._nonfinite_in_a_row} non-finite losses in a row (last {loss.item()}); lower model.lr, "
                "check the reward scale, or raise model.max_nonfinite_steps"
            )
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        if self.logger is not None:
            self.logger.log_metrics({"timing/update_s": time.perf_counter() - self._epoch_started,
                                     "rl_step": float(self.current_epoch + 1)}, step=self.global_step)

    # ------------------------------------------------------------------ evaluation
    def on_train_start(self) -> None:
        if self.validate_at_start and self.global_step == 0:
            datamodule = self.trainer.datamodule
            trajectories = [t for chunk in datamodule.val_dataloader() for t in chunk]
            stats = episode_stats(trajectories, "val")
            log.info("validation before RL: %s", {k: round(v, 4) for k, v in stats.items() if "/" not in k[4:]})
            if self.logger is not None:
                self.logger.log_metrics(stats, step=0)

    def on_validation_epoch_start(self) -> None:
        self._validation_trajectories = []

    def validation_step(self, batch: list[Trajectory], batch_idx: int) -> None:
        self._validation_trajectories.extend(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._validation_trajectories = []

    def test_step(self, batch: list[Trajectory], batch_idx: int) -> None:
        self._validation_trajectories.extend(batch)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def _log_evaluation(self, prefix: str) -> None:
        stats = episode_stats(self._validation_trajectories, prefix)
        for key, value in stats.items():
            self.log(key, value, on_step=False, on_epoch=True, batch_size=max(1, len(self._validation_trajectories)))
