"""``CraftModule``: owns the policy and the objective; one training step = one mini-batch = one optimizer step.

No environment code and no generation loop here: rollouts come from ``RolloutDataModule``.
"""

from __future__ import annotations

import logging
import time

import lightning.pytorch as pl
import torch

from craft_pl.checkpointing import compact_state_dict, complete_state_dict, restore_rng_states, rng_states
from craft_pl.evaluation import EpisodeMetrics
from craft_pl.distributed import rank_zero_first, shard_policy, sum_across_ranks
from craft_pl.objective import Objective
from craft_pl.pillars.base import CreditPillar, canonical_order
from craft_pl.pillars.controller import AsymmetricController
from craft_pl.pillars.cti import CounterfactualTokenImportance
from craft_pl.pillars.polar_kl import PolarisedKL
from craft_pl.policy import Policy
from craft_pl.rollout.batch import RolloutBatch
from craft_pl.rollout.collector import Trajectory
from craft_pl.seeding import run_seed

log = logging.getLogger(__name__)


def craft_pillars() -> list[CreditPillar]:
    """CRAFT's three pillars with the spec's defaults (what ``pillars: null`` means)."""
    return [CounterfactualTokenImportance(), AsymmetricController(), PolarisedKL()]


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
        self.active_pillars = canonical_order(self.pillars)
        for pillar in self.active_pillars:
            pillar.validate(self.objective)
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
        self._evaluation: list[list[Trajectory]] = [[], []]
        self._epoch_started = 0.0
        self._step_metrics: dict[str, list[float]] = {}
        self.record_tokens = False
        """Set by ``CreditInspector``: keep per-token gate/credit of this RL step in ``token_records``."""
        self.token_records: dict[tuple[int, int], dict] = {}
        self.run_config: dict | None = None
        """The run's full configuration (set by the CLI), stored in checkpoints."""

    @property
    def needs_teacher(self) -> bool:
        return self.objective.needs_teacher

    def prepare_step(self, batch: RolloutBatch) -> None:
        """Group-level work once per RL step: the objective's advantages, then each active pillar's preparation."""
        self.objective.prepare(batch)
        for pillar in self.active_pillars:
            pillar.prepare(batch)

    # ------------------------------------------------------------------ building
    def configure_model(self) -> None:
        with rank_zero_first(self.trainer.strategy):  # rank 0 builds tokenizer / warm-start cache, others wait
            self.build_policy(self.trainer.datamodule)
        shard_policy(self)  # FSDP2 (ModelParallelStrategy): fully_shard per block; otherwise nothing

    def build_policy(self, datamodule) -> None:
        """Demonstrations and tokenizer corpus from the environment, then ``Policy.build`` (idempotent)."""
        if self.policy.is_built:
            return
        if self.needs_teacher and not datamodule.has_privileged_context:
            raise ValueError(
                f"model.objective.distill_coef > 0 needs a teacher, but {type(datamodule.reference_env).__name__} "
                "offers no privileged context; pick an environment with skills/hints or use configs/method/grpo.yaml"
            )
        if any(p.name == "cti" for p in self.active_pillars) and datamodule.group_size < 4:
            log.warning("Pillar 1 (cti) with data.group_size=%d: with G = 2 the one sibling always gets weight 1 and "
                        "carries no teacher signal; use data.group_size >= 4 (the paper uses 8)", datamodule.group_size)
        seed = run_seed()
        demonstrations, corpus = None, []
        if self.policy.warm_start is not None or self.policy.needs_corpus:
            count = self.policy.warm_start.num_demos if self.policy.warm_start else 200
            demonstrations = datamodule.demonstrations(count, self.policy.privileged_demo_fraction)
            corpus = [prompt + response for prompt, response in demonstrations]
        self.policy.build(corpus, demonstrations if self.policy.warm_start else None, seed,
                          device=self._trainer.strategy.root_device if self._trainer is not None else None)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.policy.trainable_parameters(), lr=self.lr, betas=self.adam_betas,
                                 weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ training
    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()
        self._step_metrics = {}

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
            top_k = max((pillar.logits_top_k for pillar in self.active_pillars), default=0)
            scores, _ = self.policy.token_scores(micro.prompt_ids, micro.response_ids, "policy", with_entropy=True,
                                                 top_k=top_k, width=micro.response_mask.shape[1])
            terms = self.objective.terms(micro, scores.logp, scores.entropy)
            if top_k:
                terms.logits = scores
            for pillar in self.active_pillars:
                terms = pillar.transform(terms, micro)
            loss, metrics = self.objective.compose(terms)
            if self.record_tokens:
                self._record_tokens(micro, terms)
            if not torch.isfinite(loss):
                return self._skip_nonfinite(loss, batch_idx)
            self.manual_backward(loss)
            total_loss = total_loss + loss.detach()
            for key, value in metrics.items():  # token-means over the mini-batch's count: micro parts add up
                parts[key] = parts.get(key, 0) + value
        self._nonfinite_in_a_row = 0
        total_loss, parts = sum_across_ranks(total_loss, parts)  # partial token sums -> global token means
        grad_norm = self._clip_and_step(optimizer)
        self.policy.after_optimizer_step()
        for key, value in parts.items():
            self._step_metrics.setdefault(key, []).append(float(value))
        self.log("train/loss", total_loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=rows)
        for key, value in parts.items():
            self.log(key, value, on_step=True, on_epoch=False, batch_size=rows)
        self.log("train/grad_norm", grad_norm, on_step=True, on_epoch=False, batch_size=rows)
        return total_loss

    @torch.no_grad()
    def _record_tokens(self, batch: RolloutBatch, terms) -> None:
        """Per-token factors of each row, keyed by (trajectory, turn), for inspection callbacks."""
        for row in range(batch.num_rows):
            length = len(batch.response_ids[row])
            record = {
                "trajectory": int(batch.trajectory_ids[row]), "group": int(batch.group_ids[row]),
                "turn": int(batch.turn_index[row]), "response_ids": batch.response_ids[row],
                "observation": batch.prompt_parts[row].current if batch.prompt_parts[row] is not None else "",
                "advantage": float(batch.advantages[row]), "reward": float(batch.rewards[row]),
            }
            for name in ("gate", "credit"):
                value = getattr(terms, name)
                if value is not None:
                    record[name] = value[row, :length].detach().cpu()
            if "cti" in batch.extras:
                record["cti"] = batch.extras["cti"][row, :length].detach().cpu()
            self.token_records[(record["trajectory"], record["turn"])] = record

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

    def on_train_batch_end(self, outputs, batch: RolloutBatch, batch_idx: int) -> None:
        if batch_idx + 1 == self.trainer.num_training_batches:
            self._finish_rl_step()

    def _finish_rl_step(self) -> None:
        """After the step's last mini-batch (before any epoch-end callback, so that checkpoints and snapshots taken
        there hold the pillars' updated state): pillar updates from the step's mean metrics, then their metrics."""
        stats = {key: sum(values) / len(values) for key, values in self._step_metrics.items()}
        logged = {"timing/update_s": time.perf_counter() - self._epoch_started, "rl_step": float(self.current_epoch + 1)}
        for pillar in self.active_pillars:
            pillar.update(stats)
            logged.update({f"pillar/{pillar.name}/{key}": value for key, value in pillar.metrics().items()})
        if self.logger is not None:
            self.logger.log_metrics(logged, step=self.global_step)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Adapters only under LoRA (see ``craft_pl.checkpointing``), pillar states, global RNG states, config."""
        if "state_dict" in checkpoint:
            checkpoint["state_dict"] = compact_state_dict(checkpoint["state_dict"], self.policy.finetune)
        checkpoint["craft_pillars"] = {p.name: p.state_dict() for p in self.pillars}
        checkpoint["craft_rng"] = rng_states()
        checkpoint["craft_config"] = self.run_config

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = complete_state_dict(checkpoint["state_dict"], self.state_dict(),
                                                       self.policy.finetune)
        for pillar in self.pillars:
            if pillar.name in checkpoint.get("craft_pillars", {}):
                pillar.load_state_dict(checkpoint["craft_pillars"][pillar.name])
        if "craft_rng" in checkpoint:
            restore_rng_states(checkpoint["craft_rng"])

    # ------------------------------------------------------------------ evaluation
    def on_train_start(self) -> None:
        if self.validate_at_start and self.global_step == 0:
            loaders = self.trainer.datamodule.val_dataloader()
            self._evaluation = [[t for chunk in loader for t in chunk] for loader in loaders]
            stats = self._evaluation_stats("val")
            self.print("validation before RL: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items() if k.count("/") == 1))
            if self.logger is not None:
                self.logger.log_metrics({**stats, "val/rl_step": 0.0}, step=0)

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
        with privileged context when that diagnostic was run."""
        task_types = self.trainer.datamodule.reference_env.task_types
        metrics = [EpisodeMetrics(task_types, prefix) for _ in self._evaluation]
        for metric, trajectories in zip(metrics, self._evaluation):
            metric.update(trajectories)
        stats = metrics[0].compute()
        if len(self._evaluation) > 1 and self._evaluation[1]:
            privileged = metrics[1].compute()
            stats[f"{prefix}/success_rate_privileged"] = privileged[f"{prefix}/success_rate"]
            stats[f"{prefix}/score_privileged"] = privileged[f"{prefix}/score"]
        return stats

    @property
    def completed_rl_steps(self) -> int:
        """RL steps whose update is done (inside ``fit`` the evaluation at an epoch's end follows its update)."""
        if self.trainer.state.fn == "fit":
            return self.current_epoch + 1
        return self.trainer.fit_loop.epoch_progress.current.processed

    def _log_evaluation(self, prefix: str) -> None:
        episodes = max(1, len(self._evaluation[0]))
        stats = {**self._evaluation_stats(prefix), f"{prefix}/rl_step": float(self.completed_rl_steps)}
        for key, value in stats.items():
            self.log(key, value, on_step=False, on_epoch=True, batch_size=episodes, add_dataloader_idx=False)
