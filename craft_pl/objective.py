"""The baseline objective: GRPO as verl-agent runs it (reference: craft-spec section 3.1).

``prepare`` computes group-level quantities once per RL step (advantages); ``terms`` computes per-token factors
for a mini-batch; ``compose`` is the one place where the loss is reduced, in a fixed order:

    loss = pg_coef * tm(pg) - entropy_coef * tm(H) + kl_coef * tm(k3)

where ``tm`` is the token-mean over the mini-batch's valid tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from craft_pl.rollout.batch import RolloutBatch

LOG_RATIO_CLAMP = 20.0
K3_CLAMP = 10.0


def grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float, norm_by_std: bool) -> torch.Tensor:
    """A_row = (R_row - mean_g) / (std_g + eps) over all rows of the row's group.

    rewards, group_ids: ``[rows]``. std is unbiased (as ``torch.std``); a singleton group has mean 0, std 1.
    Group statistics are accumulated in float64, so a group whose rewards are all equal gets advantages of exactly
    0 (float32 means of equal values can be off by an ulp, which ``/ (0 + eps)`` would blow up). Returns ``[rows]``.
    """
    advantages = torch.empty_like(rewards)
    for group in torch.unique(group_ids):
        members = group_ids == group
        scores = rewards[members].double()
        if scores.numel() == 1:
            mean, std = torch.zeros((), dtype=scores.dtype), torch.ones((), dtype=scores.dtype)
        else:
            mean, std = scores.mean(), scores.std()
        centred = scores - mean
        advantages[members] = (centred / (std + eps) if norm_by_std else centred).to(rewards.dtype)
    return advantages


def dual_clip_pg_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_ratio: float, dual_clip: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token dual-clip PPO loss and a clipped-token indicator.

    logp, old_logp, advantages: ``[rows, tokens]``.
    ratio = exp(clamp(logp - old_logp, -20, 20)); l = max(-A ratio, -A clip(ratio, 1-eps, 1+eps));
    for A < 0: l = min(l, -A c). Returns ``(loss [rows, tokens], clipped [rows, tokens] bool)``.
    """
    ratio = torch.exp(torch.clamp(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + clip_ratio)
    loss = torch.maximum(unclipped, clipped)
    lower_bound = -advantages * dual_clip
    loss = torch.where(advantages < 0, torch.minimum(loss, lower_bound), loss)
    return loss, clipped > unclipped


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Low-variance KL estimate to the reference, per token: ``[rows, tokens]``.

    d = clamp(ref_logp - logp, -20, 20); k3 = exp(d) - d - 1, clamped to [-10, 10].
    """
    log_ratio = torch.clamp(ref_logp - logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, -K3_CLAMP, K3_CLAMP)


def token_mean(values: torch.Tensor, mask: torch.Tensor, num_tokens: int | torch.Tensor) -> torch.Tensor:
    """sum(values * mask) / num_tokens, with ``num_tokens`` the global valid-token count of the mini-batch."""
    return (values * mask).sum() / num_tokens


@dataclass
class LossTerms:
    """Per-token factors of one mini-batch, kept separate until ``compose``; all ``[rows, tokens]``."""

    mask: torch.Tensor
    num_tokens: int
    pg: torch.Tensor
    entropy: torch.Tensor
    kl: torch.Tensor
    clipped: torch.Tensor
    logp: torch.Tensor


class Objective:
    """GRPO with dual-clip PPO, entropy bonus and k3 reference KL (verl-agent defaults)."""

    def __init__(
        self,
        pg_coef: float = 1.0,
        clip_ratio: float = 0.2,
        dual_clip: float = 3.0,
        entropy_coef: float = 0.001,
        kl_coef: float = 0.01,
        advantage_eps: float = 1e-6,
        norm_adv_by_std: bool = True,
    ) -> None:
        """
        Args:
            pg_coef: Weight of the policy-gradient term (0 turns it off, as OPSD does).
            clip_ratio: PPO ratio clip epsilon.
            dual_clip: Dual-clip constant c (applies to negative advantages); must be > 1.
            entropy_coef: Weight of the entropy bonus (subtracted from the loss).
            kl_coef: Weight of the k3 KL to the reference policy.
            advantage_eps: Added to the group std before dividing.
            norm_adv_by_std: Divide advantages by the group std (GRPO); False gives Dr.GRPO mean-centring.
        """
        for name, value in (("pg_coef", pg_coef), ("entropy_coef", entropy_coef), ("kl_coef", kl_coef),
                            ("advantage_eps", advantage_eps)):
            if value < 0:
                raise ValueError(f"objective.{name} must be >= 0, got {value}")
        if not 0 < clip_ratio < 1:
            raise ValueError(f"objective.clip_ratio must be in (0, 1), got {clip_ratio}")
        if dual_clip <= 1:
            raise ValueError(f"objective.dual_clip must be > 1, got {dual_clip}")
        self.pg_coef = pg_coef
        self.clip_ratio = clip_ratio
        self.dual_clip = dual_clip
        self.entropy_coef = entropy_coef
        self.kl_coef = kl_coef
        self.advantage_eps = advantage_eps
        self.norm_adv_by_std = norm_adv_by_std

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef != 0

    def prepare(self, batch: RolloutBatch) -> None:
        """Group-level work, once per RL step: the GRPO advantage of every row."""
        batch.advantages = grpo_advantages(batch.rewards, batch.group_ids, self.advantage_eps, self.norm_adv_by_std)

    def terms(self, batch: RolloutBatch, logp: torch.Tensor, entropy: torch.Tensor) -> LossTerms:
        """Per-token factors of a mini-batch given the current ``logp`` and ``entropy`` ``[rows, tokens]``."""
        mask = batch.response_mask.to(logp.device)
        advantages = batch.advantages.to(logp.device)[:, None].expand_as(logp)
        pg, clipped = dual_clip_pg_loss(logp, batch.old_logp.to(logp.device), advantages, self.clip_ratio,
                                        self.dual_clip)
        if self.needs_reference:
            kl = k3_kl(logp, batch.ref_logp.to(logp.device))
        else:
            kl = torch.zeros_like(logp)
        num_tokens = batch.num_tokens if batch.num_tokens is not None else int(mask.sum())
        return LossTerms(mask=mask, num_tokens=num_tokens, pg=pg, entropy=entropy, kl=kl, clipped=clipped,
                         logp=logp)

    def compose(self, terms: LossTerms) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss, reduced in the baseline's order, and its parts (detached) for logging."""
        pg_loss = token_mean(terms.pg, terms.mask, terms.num_tokens)
        entropy = token_mean(terms.entropy, terms.mask, terms.num_tokens)
        kl = token_mean(terms.kl, terms.mask, terms.num_tokens)
        loss = pg_loss * self.pg_coef
        loss = loss - entropy * self.entropy_coef
        if self.needs_reference:
            loss = loss + kl * self.kl_coef
        metrics = {
            "pg_loss": pg_loss.detach(),
            "entropy": entropy.detach(),
            "kl": kl.detach(),
            "clip_fraction": token_mean(terms.clipped.float(), terms.mask, terms.num_tokens).detach(),
        }
        return loss, metrics
