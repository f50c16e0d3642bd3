"""Pillar 3: the polarised reference KL (docs/methods.md#pillar-3-polarised-kl).

Per token, with d = lp_ref - lp and the token's credit c (Pillar 1's signed credit, or 2g - 1 when Pillar 1 is off):

    c >= 0:  k3    = exp(d) - d - 1, clamped to [-10, 10]            mode-seeking; the baseline's own tensor
    c <  0:  k_fwd = r_c * d_c - r_c + 1, clamped to [-10, 10]       mode-covering (forward-KL) surrogate
             with d_c = clamp(d, -20, 20), r_c = exp(d_c)

The forward branch's pathwise gradient is a heuristic, not an unbiased forward-KL gradient (docs/methods.md#pillar-3-polarised-kl). Both branches
are finite for any d, so ``where`` never routes NaN into the gradient.

Variant B (``target: distill``) polarises the teacher divergence instead and leaves the reference KL alone:

    c >= 0:  SDAR's reverse surrogate  w * (lp_T - lp)                      unchanged
    c <  0:  -sg(rho_T) * lp,  rho_T = min(exp(lp_T - lp_old), rho_max)     teacher-ratio-weighted likelihood
"""

from __future__ import annotations

import torch

from typing import Literal

from craft_pl.objective import LOG_RATIO_CLAMP, K3_CLAMP, LossTerms
from craft_pl.pillars.base import STAGE_PENALTIES, CreditPillar
from craft_pl.batch import RolloutBatch


def forward_kl_surrogate(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Mode-covering per-token penalty ``[rows, tokens]``: r log r - r + 1 with r = exp(clamp(lp_ref - lp))."""
    log_ratio = torch.clamp(ref_logp - logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    return torch.clamp(ratio * log_ratio - ratio + 1.0, -K3_CLAMP, K3_CLAMP)


def polarity_source(terms: LossTerms) -> torch.Tensor:
    """The signed per-token credit that picks the branch: Pillar 1's credit, else 2g - 1 (the teacher gap's sign)."""
    return terms.credit if terms.credit is not None else 2.0 * terms.gate - 1.0


class PolarisedKL(CreditPillar):
    """Reference KL per token: mode-seeking where credit >= 0, mode-covering where credit < 0."""

    stage = STAGE_PENALTIES
    name = "polar_kl"
    requires_distillation = True

    def __init__(self, enabled: bool = True, target: Literal["reference", "distill"] = "reference",
                 ratio_max: float = 5.0) -> None:
        """
        Args:
            enabled: False removes the pillar from the loss path (the baseline k3 stays).
            target: Polarise the reference KL (default) or the teacher distillation divergence (Variant B).
            ratio_max: Cap rho_max of the teacher ratio in Variant B's mode-covering branch.
        """
        super().__init__(enabled)
        if target not in ("reference", "distill"):
            raise ValueError(f"polar_kl.target must be reference or distill, got {target!r}")
        if not ratio_max > 0:
            raise ValueError(f"polar_kl.ratio_max must be > 0, got {ratio_max}")
        self.target = target
        self.ratio_max = ratio_max
        self._forward_tokens = 0.0
        self._tokens = 0.0

    def validate(self, objective) -> None:
        super().validate(objective)
        if self.target == "reference" and not objective.use_kl:
            raise ValueError("model.pillars: polar_kl polarises the reference KL; set model.objective.kl_coef > 0")

    def prepare(self, batch: RolloutBatch) -> None:
        self._forward_tokens, self._tokens = 0.0, 0.0

    def transform(self, terms: LossTerms, batch: RolloutBatch) -> LossTerms:
        """Replace ``terms.kl`` by the polarised penalty; tokens with credit >= 0 keep the baseline's k3 values."""
        negative = polarity_source(terms) < 0
        if self.target == "reference":
            ref_logp = batch.ref_logp.to(terms.logp.device)
            terms.kl = torch.where(negative, forward_kl_surrogate(terms.logp, ref_logp), terms.kl)
        else:
            old_logp = batch.old_logp.to(terms.logp.device)
            ratio = torch.clamp(torch.exp(torch.clamp(terms.teacher_logp - old_logp, max=LOG_RATIO_CLAMP)),
                                max=self.ratio_max)
            weight = terms.gate if terms.credit is None else terms.credit
            terms.credit = torch.where(negative, torch.zeros_like(weight), weight)
            terms.penalties["polar_distill"] = torch.where(negative, -ratio.detach() * terms.logp,
                                                           torch.zeros_like(terms.logp))
            terms.coefficients = dict(terms.coefficients, polar_distill=terms.coefficients["distill"])
        self._forward_tokens += float((negative & terms.mask).sum())
        self._tokens += float(terms.mask.sum())
        return terms

    def metrics(self) -> dict[str, float]:
        return {"forward_fraction": self._forward_tokens / self._tokens} if self._tokens else {}
