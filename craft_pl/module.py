"""``CraftModule``: owns the policy and the objective; one training step = one mini-batch = one optimizer step.

No environment code and no generation loop here: rollouts come from the data side, which ``connect`` hands what it
needs (the policy and the loss recipe, ``craft_pl.loss``) and which hands back the facts the learner needs (task
types, demonstrations, an evaluation function). The step's rollout statistics arrive with its first mini-batch.
Every metric is logged through ``log_metrics``.
"""

from __future__ import annotations

import logging
import time

import lightning.pytorch as pl
import torch

from craft_pl.batch import DataFacts, RolloutBatch, Trajectory
from craft_pl.checkpointing import (DIGEST_KEY, checkpoint_digest, compact_state_dict, complete_state_dict,
                                    restore_rng_states, rng_states, verify_checkpoint)
from craft_pl.distributed import rank_zero_first, shard_policy, sum_across_ranks
from craft_pl.evaluation import EpisodeMetrics, success_by_hint
from craft_pl.loss import LossRecipe
from craft_pl.model import Policy
from craft_pl.objective import Objective
from craft_pl.pillars import CreditPillar, craft_pillars
from craft_pl.seeding import run_seed

log = logging.getLogger(__name__)


class CraftModule(pl.LightningModule):
    """Self-distilled agentic RL on a causal-LM policy."""

    def __init__(
        self,
        policy: Policy,
        objective: Objective | None = None,
        pillars: list[CreditPillar] | None = None,
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
            objective: The baseline loss (GRPO / OPSD / SDAR coefficients); default SDAR's, which CRAFT builds on.
            pillars: Credit pillars that transform the loss terms; null = CRAFT's three pillars with their defaults,
                [] = none (the baseline objective alone). Order in the list is irrelevant.
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
        self.pillars = list(pillars) if pillars is not None else craft_pillars()
        self.loss_recipe = LossRecipe(self.objective, self.pillars)
        if not (len(adam_betas) == 2 and all(0 <= beta < 1 for beta in adam_betas)):
            raise ValueError(f"model.adam_betas={list(adam_betas)} is invalid; give two numbers in [0, 1), e.g. [0.9, 0.999]")
        if not weight_decay >= 0:
            raise ValueError(f"model.weight_decay={weight_decay} is invalid; give a number >= 0")
        self.lr = lr
        self.weight_decay = weight_decay
        self.adam_betas = tuple(adam_betas)
        if grad_clip < 0:
            raise ValueError(f"model.grad_clip must be >= 0, got {grad_clip}")
        self.grad_clip = grad_clip
        self.micro_batch_size = micro_batch_size
        self.validate_at_start = validate_at_start
        self.evaluation_at_start: dict[str, float] | None = None
        """The validation before RL, until ``EvaluationReport`` prints and writes it."""
        self.max_nonfinite_steps = max_nonfinite_steps
        self.automatic_optimization = False
        self._nonfinite_in_a_row = 0
        self._evaluation: list[list[Trajectory]] = [[], []]
        self._epoch_started = 0.0
        self._update_seconds = 0.0
        self._step_metrics: dict[str, list[float]] = {}
        self.data_facts: DataFacts | None = None
        """What the learner knows of the data side, handed over by ``connect``."""
        self.run_config: dict | None = None
        """The run's full configuration (set by the CLI), stored in checkpoints."""

    # ------------------------------------------------------------------ hand-overs
    def connect(self, facts: DataFacts) -> None:
        """Take what the learner needs from the data side (once, before the model is built); a method the data
        settings cannot serve fails here, before any model loads."""
        self.loss_recipe.check_data(facts)
        self.data_facts = facts

    # ------------------------------------------------------------------ building
    def configure_model(self) -> None:
        if self.data_facts is None:
            raise RuntimeError("CraftModule is not connected to its data: call craft_pl.module.connect(module, "
                               "datamodule) before trainer.fit/validate/test (the CLI does it)")
        with rank_zero_first(self.trainer.strategy):  # rank 0 builds tokenizer / warm-start cache, others wait
            self.build_policy(self.data_facts)
        shard_policy(self)  # FSDP2 (ModelParallelStrategy): fully_shard per block; otherwise nothing

    def build_policy(self, facts: DataFacts) -> None:
        """Demonstrations and tokenizer corpus from the data side, then ``Policy.build`` (idempotent)."""
        if self.policy.is_built:
            return
        self.loss_recipe.check_data(facts)
        seed = run_seed()
        demonstrations, corpus = None, []
        if self.policy.warm_start is not None or self.policy.needs_corpus:
            count = self.policy.warm_start.num_demos if self.policy.warm_start else 200
            demonstrations = facts.demonstrations(count, self.policy.privileged_demo_fraction,
                                                  self.policy.recovery_demo_rate, self.policy.recovery_demo_run)
            corpus = [prompt + response for prompt, response in demonstrations]
        self.policy.build(corpus, demonstrations if self.policy.warm_start else None, seed,
                          device=self._trainer.strategy.root_device if self._trainer is not None else None,
                          student_demonstrations=facts.student_demonstrations)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.policy.trainable_parameters(), lr=self.lr, betas=self.adam_betas,
                                 weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()
        self._update_seconds = 0.0
        self._step_metrics = {}
        self._rollout_stats = {}

    def training_step(self, batch: RolloutBatch, batch_idx: int) -> dict:
        """One optimizer step on one mini-batch (micro-batched when ``micro_batch_size`` is set): the policy's
        forward, then the loss recipe. A batch without ``old_logp`` is an on-policy step's only update: its old
        log-probs are this forward's, detached. The step's first mini-batch carries its rollout statistics."""
        started = time.perf_counter()
        if batch.step_stats:
            self.report_rollout(batch.step_stats)
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        rows = batch.num_rows
        size = self.micro_batch_size or rows
        total_loss = torch.zeros(())
        parts: dict[str, torch.Tensor] = {}
        credit: dict[str, list[torch.Tensor]] = {}
        for start in range(0, rows, size):
            micro = batch.select(torch.arange(start, min(rows, start + size)))
            micro.num_tokens = batch.num_tokens
            scores, _ = self.policy.token_scores(micro.prompt_ids, micro.response_ids, "policy", with_entropy=True,
                                                 top_k=self.loss_recipe.logits_top_k,
                                                 width=micro.response_mask.shape[1],
                                                 full_distribution=self.loss_recipe.needs_full_distribution,
                                                 temperature=batch.temperature)
            if micro.old_logp is None:
                micro.old_logp = scores.logp.detach()
            result = self.loss_recipe.loss(micro, scores.logp, scores.entropy, logits=scores)
            for name, factor in result.inspected.items():
                credit.setdefault(name, []).append(factor)
            if not torch.isfinite(result.loss):
                return self._skip_nonfinite(result.loss, batch_idx)
            self.manual_backward(result.loss)
            total_loss = total_loss + result.loss.detach()
            for key, value in result.metrics.items():  # token-means over the mini-batch's count: micro parts add up
                parts[key] = parts.get(key, 0) + value
        self._nonfinite_in_a_row = 0
        total_loss, parts = sum_across_ranks(total_loss, parts)  # partial token sums -> global token means
        grad_norm = self._clip_and_step(optimizer)
        self.policy.after_optimizer_step()
        for key, value in parts.items():
            self._step_metrics.setdefault(key, []).append(float(value))
        self.log_metrics({"train/loss": total_loss, **parts, "train/grad_norm": grad_norm}, "optimizer_step",
                         batch_size=rows)
        self._update_seconds += time.perf_counter() - started
        return {"loss": total_loss, "credit": {name: torch.cat(values) for name, values in credit.items()}}

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
        self.log_metrics({"train/nonfinite_losses": float(self._nonfinite_in_a_row)}, "optimizer_step")
        self.optimizers().zero_grad(set_to_none=True)
        if self._nonfinite_in_a_row > self.max_nonfinite_steps:
            raise FloatingPointError(
                f"{self._nonfinite_in_a_row} non-finite losses in a row (last {loss.item()}); lower model.lr, "
                "check the reward scale, or raise model.max_nonfinite_steps"
            )
        return loss.detach()

    def on_train_batch_end(self, outputs, batch: RolloutBatch, batch_idx: int) -> None:
        if batch_idx + 1 == self.trainer.num_training_batches:
            self._finish_rl_step()

    def _finish_rl_step(self) -> None:
        """After the step's last mini-batch (before any epoch-end callback, so that checkpoints and snapshots taken
        there hold the pillars' updated state): pillar updates from the step's mean metrics, then their metrics."""
        stats = {key: sum(values) / len(values) for key, values in self._step_metrics.items()}
        logged = {**self._rollout_stats, "timing/update_s": self._update_seconds,
                  "timing/step_s": time.perf_counter() - self._epoch_started, "rl_step": float(self.current_epoch + 1)}
        logged.update(self.loss_recipe.finish_step(stats))
        self.log_metrics(logged, "rl_step")

    def report_rollout(self, stats: dict[str, float]) -> None:
        """The step's rollout statistics and timings (carried by the step's first mini-batch), logged with the step's
        other once-per-RL-step values after its last optimizer step."""
        self._rollout_stats = dict(stats)
        if stats and self.trainer.progress_bar_callback is not None:
            self.print(
                f"RL step {self.current_epoch + 1}: success {stats['rollout/success_rate']:.3f} "
                f"score {stats['rollout/score']:.3f} valid {stats['rollout/valid_action_ratio']:.3f} "
                f"turns {stats['rollout/turns']:.2f} rollout {stats['timing/rollout_s']:.1f}s"
            )

    def log_metrics(self, metrics: dict, kind: str, batch_size: int | None = None) -> None:
        """The one logging path. ``kind``: ``optimizer_step`` (one value per optimizer step, ``train/loss`` on the
        progress bar), ``rl_step`` (once per RL step, at the current global step) or ``evaluation`` (an evaluation
        epoch's values for callbacks and checkpoint monitors, written to the logger at the current global step like
        ``rl_step``'s, so that an evaluation sits at the step it follows)."""
        if kind == "optimizer_step":
            for key, value in metrics.items():
                self.log(key, value, on_step=True, on_epoch=False, prog_bar=key == "train/loss", batch_size=batch_size)
        elif kind == "evaluation":
            for key, value in metrics.items():
                self.log(key, value, on_step=False, on_epoch=True, batch_size=batch_size, add_dataloader_idx=False,
                         logger=False)
            if self.logger is not None and metrics:
                self.logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=self.evaluated_step)
        elif kind == "rl_step":
            if self.logger is not None and metrics:
                self.logger.log_metrics(metrics, step=self.global_step)
        else:
            raise ValueError(f"log_metrics: unknown kind {kind!r}; use optimizer_step, rl_step or evaluation")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Adapters only under LoRA (see ``craft_pl.checkpointing``), pillar, RNG states, config; then the digest."""
        if "state_dict" in checkpoint:
            checkpoint["state_dict"] = compact_state_dict(checkpoint["state_dict"], self.policy.finetune)
        checkpoint["craft_pillars"] = self.loss_recipe.state_dict()
        checkpoint["craft_rng"] = rng_states()
        checkpoint["craft_config"] = self.run_config
        checkpoint[DIGEST_KEY] = checkpoint_digest(checkpoint)  # last: it covers everything above

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Verify the checkpoint against its digest (``CheckpointError`` naming the file), then restore."""
        verify_checkpoint(checkpoint, getattr(self._trainer, "ckpt_path", None) or "being loaded")
        checkpoint["state_dict"] = complete_state_dict(checkpoint["state_dict"], self.state_dict(),
                                                       self.policy.finetune)
        self.loss_recipe.load_state_dict(checkpoint.get("craft_pillars", {}))
        if "craft_rng" in checkpoint:
            restore_rng_states(checkpoint["craft_rng"])
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
        self._checkpoint_steps = (int(checkpoint.get("global_step", 0)), int(progress.get("processed", 0)))

    # ------------------------------------------------------------------ evaluation
    def on_train_start(self) -> None:
        if self.validate_at_start and self.global_step == 0:
            self._evaluation = self.data_facts.evaluate()
            stats = self._evaluation_stats("val")
            if self.data_facts.signal_at_start is not None:
                stats.update(self.data_facts.signal_at_start())
            self.evaluation_at_start = {**stats, "val/rl_step": 0.0}  # printed and reported by EvaluationReport
            self.log_metrics(self.evaluation_at_start, "rl_step")

    def on_validation_epoch_start(self) -> None:
        self._evaluation = [[], []]

    def validation_step(self, batch: list[Trajectory], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation[dataloader_idx].extend(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_start(self) -> None:
        self._evaluation = [[], []]

    def test_step(self, batch: list[Trajectory], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluation[dataloader_idx].extend(batch)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def _evaluation_stats(self, prefix: str) -> dict[str, float]:
        """Metrics of the plain panel (no privileged context: what every reported number is), plus success and score
        with privileged context when that diagnostic was run, and its success split by whether the task's hint was
        correct (``success_rate_privileged_reliable`` / ``_unreliable``, each where it has episodes)."""
        task_types = self.data_facts.task_types
        metrics = [EpisodeMetrics(task_types, prefix) for _ in self._evaluation]
        for metric, trajectories in zip(metrics, self._evaluation):
            metric.update(trajectories)
        stats = metrics[0].compute()
        if len(self._evaluation) > 1 and self._evaluation[1]:
            privileged = metrics[1].compute()
            stats[f"{prefix}/success_rate_privileged"] = privileged[f"{prefix}/success_rate"]
            stats[f"{prefix}/score_privileged"] = privileged[f"{prefix}/score"]
        if len(self._evaluation) > 1:
            split = success_by_hint(self._evaluation[1], task_types, self.data_facts.hint_is_reliable, prefix)
            stats.update({f"{prefix}/success_rate_privileged_{name}": rate for name, rate in split.items()})
        return stats

    @property
    def completed_rl_steps(self) -> int:
        """RL steps whose update is done (inside ``fit`` the evaluation at an epoch's end follows its update;
        ``validate``/``test`` do not restore the fit loop: the loaded checkpoint's count)."""
        if self.trainer.state.fn == "fit":
            return self.current_epoch + 1
        return getattr(self, "_checkpoint_steps", (0, self.trainer.fit_loop.epoch_progress.current.processed))[1]

    @property
    def evaluated_step(self) -> int:
        """The optimizer step of the weights being evaluated (``validate``/``test``: the loaded checkpoint's)."""
        if self.trainer.state.fn == "fit":
            return self.global_step
        return getattr(self, "_checkpoint_steps", (self.global_step, 0))[0]

    def _log_evaluation(self, prefix: str) -> None:
        episodes = max(1, len(self._evaluation[0]))
        stats = {**self._evaluation_stats(prefix), f"{prefix}/rl_step": float(self.completed_rl_steps)}
        self.log_metrics(stats, "evaluation", batch_size=episodes)


def connect(module: CraftModule, datamodule) -> None:
    """Hand each side what it needs from the other, once, before ``trainer.fit/validate/test`` (the CLI does it):
    the data side gets the policy and the loss recipe (it prepares each step's rows with it); the learner gets the
    data side's facts."""
    datamodule.connect(module.policy, module.loss_recipe)
    module.connect(datamodule.data_facts())
