"""The baseline objective: SDAR = GRPO as verl-agent runs it + gated self-distillation (docs/methods.md#sdar).

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

from dataclasses import dataclass, field
from typing import Any

import torch

from craft_pl.advantages import AdvantageEstimator, GRPOAdvantage, grpo_advantages  # noqa: F401 - re-exported
from craft_pl.batch import RolloutBatch

LOG_RATIO_CLAMP = 20.0
K3_CLAMP = 10.0


def dual_clip_pg_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip_ratio: float, dual_clip: float,
    clip_ratio_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token dual-clip PPO loss and a clipped-token indicator.

    logp, old_logp, advantages: ``[rows, tokens]``.
    ratio = exp(clamp(logp - old_logp, -20, 20)); l = max(-A ratio, -A clip(ratio, 1-eps_low, 1+eps_high));
    for A < 0: l = min(l, -A c). eps_low = ``clip_ratio``; eps_high = ``clip_ratio_high`` (DAPO's clip-higher), or
    ``clip_ratio`` when None. Returns ``(loss [rows, tokens], clipped [rows, tokens] bool)``.
    """
    upper = clip_ratio if clip_ratio_high is None else clip_ratio_high
    ratio = torch.exp(torch.clamp(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + upper)
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
        clip_ratio_high: float | None = None,
        dual_clip: float = 3.0,
        entropy_coef: float = 0.001,
        kl_coef: float = 0.01,
        distill_coef: float = 0.01,
        gate_beta: float = 5.0,
        advantage: AdvantageEstimator | None = None,
    ) -> None:
        """
        Args:
            pg_coef: Weight of the policy-gradient term (0 turns it off, as OPSD does).
            clip_ratio: PPO ratio clip epsilon (the lower bound 1 - eps; also the upper one unless clip_ratio_high).
            clip_ratio_high: DAPO's clip-higher: the upper bound 1 + eps_high, so that rare tokens with a positive
                advantage can grow further (DAPO: 0.28 with clip_ratio 0.2); null = clip_ratio.
            dual_clip: Dual-clip constant c (applies to negative advantages); must be > 1.
            entropy_coef: Weight of the entropy bonus (subtracted from the loss).
            kl_coef: Weight of the k3 KL to the reference policy (0 removes the term and the reference pass).
            distill_coef: Weight lambda of the gated distillation term (0 = plain GRPO, no teacher pass; SDAR 0.01).
            gate_beta: Gate sharpness beta in sigmoid(beta * (lp_T - lp)); 0 gives the ungated 0.5 (GRPO+OPSD).
            advantage: The advantage estimator, chosen by ``class_path``; null = ``GRPOAdvantage()`` (verl-agent's
                GRPO). ``craft_pl.advantages.GiGPOAdvantage`` adds GiGPO's same-state step term.
        """
        for name, value in (("pg_coef", pg_coef), ("entropy_coef", entropy_coef), ("kl_coef", kl_coef),
                            ("distill_coef", distill_coef), ("gate_beta", gate_beta)):
            if value < 0:
                raise ValueError(f"objective.{name} must be >= 0, got {value}")
        if not 0 < clip_ratio < 1:
            raise ValueError(f"objective.clip_ratio must be in (0, 1), got {clip_ratio}")
        if clip_ratio_high is not None and not 0 < clip_ratio_high < 10:
            raise ValueError(f"objective.clip_ratio_high must be in (0, 10) or null (= clip_ratio; DAPO uses 0.28), "
                             f"got {clip_ratio_high}")
        if dual_clip <= 1:
            raise ValueError(f"objective.dual_clip must be > 1, got {dual_clip}")
        if advantage is not None and not isinstance(advantage, AdvantageEstimator):
            raise ValueError(f"model.objective.init_args.advantage must be an advantage estimator class (class_path: "
                             f"craft_pl.advantages.GRPOAdvantage or GiGPOAdvantage), got {advantage!r}")
        self.pg_coef = pg_coef
        self.clip_ratio = clip_ratio
        self.clip_ratio_high = clip_ratio_high
        self.dual_clip = dual_clip
        self.entropy_coef = entropy_coef
        self.kl_coef = kl_coef
        self.distill_coef = distill_coef
        self.gate_beta = gate_beta
        self.advantage = advantage if advantage is not None else GRPOAdvantage()

    @property
    def use_kl(self) -> bool:
        """Whether the reference-KL term exists (verl's ``use_kl_loss``); fixed by configuration."""
        return self.kl_coef > 0

    @property
    def use_distill(self) -> bool:
        """Whether the distillation term exists (``use_sdar_loss``); fixed by configuration."""
        return self.distill_coef > 0

    def prepare(self, batch: RolloutBatch) -> dict[str, float]:
        """Group-level work, once per RL step: every row's advantage (``batch.advantages`` ``[rows]``) from the
        estimator; returns the estimator's diagnostics."""
        batch.advantages, diagnostics = self.advantage.estimate(batch)
        return diagnostics

    def terms(self, batch: RolloutBatch, logp: torch.Tensor, entropy: torch.Tensor) -> LossTerms:
        """Per-token factors of a mini-batch given the current ``logp`` and ``entropy`` ``[rows, tokens]``."""
        device = logp.device
        mask = batch.response_mask.to(device)
        advantages = batch.advantages.to(device)[:, None].expand_as(logp)
        pg, clipped = dual_clip_pg_loss(logp, batch.old_logp.to(device), advantages, self.clip_ratio, self.dual_clip,
                                        self.clip_ratio_high)
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
