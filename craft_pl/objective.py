"""The baseline objective: SDAR = GRPO as verl-agent runs it + gated self-distillation (craft-spec 2.3, 3.1).

``prepare`` computes group-level quantities once per RL step (advantages); ``terms`` computes per-token factors
for a mini-batch; pillars may transform those terms; ``compose`` is the one place where the loss is reduced, in
the baseline's fixed order:

    loss = pg_coef * tm(pg) - entropy_coef * tm(H) [+ kl_coef * tm(k3)] [+ distill_coef * tm(w * (lp_T - lp))]
           [+ coef_p * tm(penalty_p) for each extra penalty a pillar adds]

where ``tm`` is the token-mean over the mini-batch's valid tokens and ``w`` the detached gate
``g = sigmoid(beta * (lp_T - sg(lp)))`` (or a pillar's signed credit). GRPO, GRPO+OPSD, OPSD and SDAR are sets of
coefficients of this one class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from craft_pl.advantages import (  # noqa: F401 - grpo_advantages is re-exported from here
    GIGPO_NORMS,
    GigpoNorm,
    discounted_step_returns,
    gigpo_advantages,
    grpo_advantages,
)
from craft_pl.batch import RolloutBatch

LOG_RATIO_CLAMP = 20.0
K3_CLAMP = 10.0


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


def sdar_gate(teacher_logp: torch.Tensor, logp: torch.Tensor, beta: float) -> torch.Tensor:
    """g = sg(sigmoid(beta * (lp_T - sg(lp)))), per token ``[rows, tokens]``; beta = 0 gives g = 0.5 everywhere."""
    return torch.sigmoid(beta * (teacher_logp - logp.detach())).detach()


def distillation_loss(weight: torch.Tensor, teacher_logp: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """Per-token sampled-token distillation surrogate w * (lp_T - lp) ``[rows, tokens]``.

    Its gradient is -w * grad(lp): a positive weight raises the sampled token, a negative one lowers it.
    """
    return weight * (teacher_logp - logp)


def _check_gigpo(advantage: str, omega: float, gamma: float, norm: str, norm_adv_by_std: bool) -> None:
    """Raise ``ValueError`` naming the ``model.objective`` key and the fix when the advantage settings are wrong."""
    if advantage not in ("grpo", "gigpo"):
        raise ValueError(f"model.objective.advantage must be 'grpo' or 'gigpo', got {advantage!r}")
    if not (isinstance(omega, (int, float)) and math.isfinite(omega) and omega >= 0):
        raise ValueError(f"model.objective.gigpo_omega must be a finite number >= 0 (verl-agent: 1.0), got {omega!r}")
    if not (isinstance(gamma, (int, float)) and 0 < gamma <= 1):
        raise ValueError(f"model.objective.gigpo_gamma must be in (0, 1] (verl-agent: 0.95), got {gamma!r}")
    if norm not in GIGPO_NORMS:
        raise ValueError(f"model.objective.gigpo_norm must be one of {GIGPO_NORMS}, got {norm!r}")
    if advantage == "gigpo" and norm_adv_by_std != (norm == "mean_std_norm"):
        raise ValueError(f"model.objective.gigpo_norm={norm} and norm_adv_by_std={norm_adv_by_std} disagree: GiGPO "
                         "normalises both terms one way; set norm_adv_by_std: true with gigpo_norm: mean_std_norm, "
                         "or norm_adv_by_std: false with gigpo_norm: mean_norm")


@dataclass
class LossTerms:
    """Per-token factors of one mini-batch, kept separate until ``compose``; tensors are ``[rows, tokens]``.

    Pillars transform these (``credit`` replaces the gate as the distillation weight, ``coefficients`` may be
    rescaled, ``kl`` replaced, ``penalties`` extended); ``compose`` forms the products.
    """

    mask: torch.Tensor
    num_tokens: int
    logp: torch.Tensor
    pg: torch.Tensor
    clipped: torch.Tensor
    entropy: torch.Tensor
    kl: torch.Tensor | None
    coefficients: dict[str, float]
    teacher_logp: torch.Tensor | None = None
    gate: torch.Tensor | None = None
    credit: torch.Tensor | None = None
    penalties: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: Any = None
    """``ResponseScores`` with the sampled token's logit and the top-k competing logits, filled only when an
    active pillar asks for them (``CreditPillar.logits_top_k``); unused by the baseline."""


class Objective:
    """SDAR's loss with verl-agent's GRPO: dual-clip PPO, entropy bonus, k3 reference KL, gated distillation."""

    def __init__(
        self,
        pg_coef: float = 1.0,
        clip_ratio: float = 0.2,
        dual_clip: float = 3.0,
        entropy_coef: float = 0.001,
        kl_coef: float = 0.01,
        distill_coef: float = 0.01,
        gate_beta: float = 5.0,
        advantage_eps: float = 1e-6,
        norm_adv_by_std: bool = True,
        advantage: Literal["grpo", "gigpo"] = "grpo",
        gigpo_omega: float = 1.0,
        gigpo_gamma: float = 0.95,
        gigpo_norm: GigpoNorm = "mean_std_norm",
    ) -> None:
        """
        Args:
            pg_coef: Weight of the policy-gradient term (0 turns it off, as OPSD does).
            clip_ratio: PPO ratio clip epsilon.
            dual_clip: Dual-clip constant c (applies to negative advantages); must be > 1.
            entropy_coef: Weight of the entropy bonus (subtracted from the loss).
            kl_coef: Weight of the k3 KL to the reference policy (0 removes the term and the reference pass).
            distill_coef: Weight lambda of the gated distillation term (0 = plain GRPO, no teacher pass; SDAR 0.01).
            gate_beta: Gate sharpness beta in sigmoid(beta * (lp_T - lp)); 0 gives the ungated 0.5 (GRPO+OPSD).
            advantage_eps: Added to the group std before dividing.
            norm_adv_by_std: Divide advantages by the group std (GRPO); False gives Dr.GRPO mean-centring.
            advantage: "grpo" (episode-relative, verl-agent) or "gigpo" (plus ω × a same-anchor-state step term).
            gigpo_omega: GiGPO's weight ω of the step term (verl-agent's step_advantage_w).
            gigpo_gamma: GiGPO's discount γ of the step returns over a trajectory's turns (verl-agent scripts: 0.95).
            gigpo_norm: GiGPO's F_norm for both terms: std + eps ("mean_std_norm") or 1 ("mean_norm").
        """
        for name, value in (("pg_coef", pg_coef), ("entropy_coef", entropy_coef), ("kl_coef", kl_coef),
                            ("distill_coef", distill_coef), ("gate_beta", gate_beta),
                            ("advantage_eps", advantage_eps)):
            if value < 0:
                raise ValueError(f"objective.{name} must be >= 0, got {value}")
        if not 0 < clip_ratio < 1:
            raise ValueError(f"objective.clip_ratio must be in (0, 1), got {clip_ratio}")
        if dual_clip <= 1:
            raise ValueError(f"objective.dual_clip must be > 1, got {dual_clip}")
        _check_gigpo(advantage, gigpo_omega, gigpo_gamma, gigpo_norm, norm_adv_by_std)
        self.pg_coef = pg_coef
        self.clip_ratio = clip_ratio
        self.dual_clip = dual_clip
        self.entropy_coef = entropy_coef
        self.kl_coef = kl_coef
        self.distill_coef = distill_coef
        self.gate_beta = gate_beta
        self.advantage_eps = advantage_eps
        self.norm_adv_by_std = norm_adv_by_std
        self.advantage = advantage
        self.gigpo_omega = float(gigpo_omega)
        self.gigpo_gamma = float(gigpo_gamma)
        self.gigpo_norm = gigpo_norm

    @property
    def use_kl(self) -> bool:
        """Whether the reference-KL term exists (verl's ``use_kl_loss``); fixed by configuration."""
        return self.kl_coef > 0

    @property
    def use_distill(self) -> bool:
        """Whether the distillation term exists (``use_sdar_loss``); fixed by configuration."""
        return self.distill_coef > 0

    def prepare(self, batch: RolloutBatch) -> None:
        """Group-level work, once per RL step: the GRPO (or GiGPO) advantage of every row.

        With ``advantage="gigpo"`` the step term A^S ``[rows]`` (before ω) is also stored in
        ``batch.extras["gigpo_step_advantage"]``; its row mean is ``train/step_advantage_mean``.
        """
        if self.advantage == "gigpo":
            anchors = getattr(batch, "anchor_ids", None)
            if anchors is None:
                raise ValueError("model.objective.advantage=gigpo needs batch.anchor_ids (the anchor state of each "
                                 "row); build the batch with craft_pl.batch.RolloutBatch")
            step_returns = discounted_step_returns(batch.rewards, batch.valid_action, batch.group_ids,
                                                   batch.trajectory_ids, batch.turn_index, self.gigpo_gamma)
            batch.advantages, step = gigpo_advantages(batch.rewards, step_returns, batch.group_ids, anchors,
                                                      self.gigpo_omega, self.gigpo_norm, self.advantage_eps)
            batch.extras["gigpo_step_advantage"] = step
            return
        batch.advantages = grpo_advantages(batch.rewards, batch.group_ids, self.advantage_eps, self.norm_adv_by_std)

    def terms(self, batch: RolloutBatch, logp: torch.Tensor, entropy: torch.Tensor) -> LossTerms:
        """Per-token factors of a mini-batch given the current ``logp`` and ``entropy`` ``[rows, tokens]``."""
        device = logp.device
        mask = batch.response_mask.to(device)
        advantages = batch.advantages.to(device)[:, None].expand_as(logp)
        pg, clipped = dual_clip_pg_loss(logp, batch.old_logp.to(device), advantages, self.clip_ratio, self.dual_clip)
        terms = LossTerms(
            mask=mask,
            num_tokens=batch.num_tokens if batch.num_tokens is not None else int(mask.sum()),
            logp=logp,
            pg=pg,
            clipped=clipped,
            entropy=entropy,
            kl=k3_kl(logp, batch.ref_logp.to(device)) if self.use_kl else None,
            coefficients={"pg": self.pg_coef, "entropy": self.entropy_coef, "kl": self.kl_coef,
                          "distill": self.distill_coef},
        )
        if self.use_distill:
            terms.teacher_logp = batch.teacher_logp.to(device)
            terms.gate = sdar_gate(terms.teacher_logp, logp, self.gate_beta)
        return terms

    def compose(self, terms: LossTerms) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss, reduced in the baseline's order, and its parts (detached) for logging."""
        coefficients = terms.coefficients
        pg_loss = token_mean(terms.pg, terms.mask, terms.num_tokens)
        entropy = token_mean(terms.entropy, terms.mask, terms.num_tokens)
        loss = pg_loss * coefficients["pg"]
        loss = loss - entropy * coefficients["entropy"]
        metrics = {"train/pg_loss": pg_loss.detach(), "train/entropy": entropy.detach(),
                   "train/clip_fraction": token_mean(terms.clipped.float(), terms.mask, terms.num_tokens).detach()}
        if self.use_kl:
            kl = token_mean(terms.kl, terms.mask, terms.num_tokens)
            loss = loss + kl * coefficients["kl"]
            metrics["train/kl"] = kl.detach()
        if self.use_distill:
            weight = terms.gate if terms.credit is None else terms.credit
            distill = token_mean(distillation_loss(weight, terms.teacher_logp, terms.logp), terms.mask,
                                 terms.num_tokens)
            loss = loss + distill * coefficients["distill"]
            metrics["distill/loss"] = distill.detach()
            metrics["distill/gate_mean"] = token_mean(terms.gate, terms.mask, terms.num_tokens).detach()
            metrics["distill/gate_active_ratio"] = token_mean((terms.gate > 0.5).float(), terms.mask, terms.num_tokens).detach()
            metrics["distill/teacher_gap_mean"] = token_mean(terms.teacher_logp - terms.logp.detach(), terms.mask,
                                                     terms.num_tokens).detach()
        for name, penalty in terms.penalties.items():
            value = token_mean(penalty, terms.mask, terms.num_tokens)
            loss = loss + value * coefficients[name]
            metrics[f"train/{name}_loss"] = value.detach()
        return loss, metrics
