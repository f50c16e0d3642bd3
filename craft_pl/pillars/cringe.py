"""Adaptive-CRINGE: CRAFT's comparator that shares Pillar 2 and replaces counterfactual credit by CRINGE's
contrastive term on teacher-rejected tokens (docs/methods.md#adaptive-cringe).

Per token, with the SDAR gate g = sigmoid(beta * (lp_T - sg(lp))):

    g >= 0.5 (teacher endorses):  g * (lp_T - lp)                         SDAR's surrogate, unchanged
    g <  0.5 (teacher rejects):   w * softplus(z_y - z_s+)                 CRINGE: push the sampled logit z_y below
                                                                          a pseudo-positive s+ drawn from the
                                                                          student's top-k other logits
    w = 1, or (1 - g) with ``weight_by_gate``

Both parts are scaled by the distillation coefficient (the Pillar-2 controller's lambda_n when it is enabled). The
pseudo-positive is the top other token for k = 1; for k > 1 it is sampled from the softmax over the top-k other
logits with this pillar's own ``torch.Generator`` (seeded from the run seed), so no other random stream moves.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from craft_pl.objective import LossTerms
from craft_pl.pillars.base import STAGE_PENALTIES, CreditPillar
from craft_pl.batch import RolloutBatch
from craft_pl.seeding import derive_seed, restore_generator, run_seed


def cringe_contrastive(sampled_logit: torch.Tensor, positive_logit: torch.Tensor, detach_positive: bool) -> torch.Tensor:
    """softplus(z_y - z_s+) per token ``[rows, tokens]``: CE over the pair [z_y, z_s+] with label s+."""
    if detach_positive:
        positive_logit = positive_logit.detach()
    return F.softplus(sampled_logit - positive_logit)


class AdaptiveCringe(CreditPillar):
    """SDAR's surrogate on teacher-endorsed tokens, CRINGE's contrastive loss on teacher-rejected ones."""

    stage = STAGE_PENALTIES
    name = "cringe"
    requires_distillation = True

    def __init__(
        self,
        enabled: bool = True,
        top_k: int = 1,
        negatives: Literal["teacher_rejected", "negative_advantage"] = "teacher_rejected",
        weight_by_gate: bool = False,
        detach_positive: bool = False,
    ) -> None:
        """
        Args:
            enabled: False removes the pillar from the loss path (the SDAR term stays).
            top_k: Pseudo-positives are drawn from the student's top-k logits other than the sampled token (1 = argmax).
            negatives: Which tokens get the contrastive term: teacher-rejected (g < 0.5) or every token of a row
                with a negative advantage.
            weight_by_gate: Weight the contrastive term by (1 - g).
            detach_positive: Stop the gradient through the pseudo-positive's logit.
        """
        super().__init__(enabled)
        if top_k < 1:
            raise ValueError(f"cringe.top_k must be >= 1, got {top_k}")
        if negatives not in ("teacher_rejected", "negative_advantage"):
            raise ValueError(f"cringe.negatives must be teacher_rejected or negative_advantage, got {negatives!r}")
        self.top_k = top_k
        self.negatives = negatives
        self.weight_by_gate = weight_by_gate
        self.detach_positive = detach_positive
        self.generator: torch.Generator | None = None
        self._negative_tokens = 0.0
        self._tokens = 0.0

    @property
    def logits_top_k(self) -> int:
        return self.top_k

    def prepare(self, batch: RolloutBatch) -> None:
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(derive_seed(run_seed(), "cringe"))
        self._negative_tokens, self._tokens = 0.0, 0.0

    def _pseudo_positive(self, top_logits: torch.Tensor) -> torch.Tensor:
        """Logit of s+ per token from ``top_logits [rows, tokens, k]``."""
        if self.top_k == 1:
            return top_logits[..., 0]
        probs = torch.softmax(top_logits.detach(), dim=-1).reshape(-1, self.top_k)
        choice = torch.multinomial(probs.cpu(), 1, generator=self.generator).to(top_logits.device)
        return top_logits.reshape(-1, self.top_k).gather(-1, choice).reshape(top_logits.shape[:-1])

    def transform(self, terms: LossTerms, batch: RolloutBatch) -> LossTerms:
        scores = terms.logits
        if scores is None or scores.top_logits is None:
            raise RuntimeError("cringe needs the training forward's top-k logits (CraftModule asks for them)")
        if self.negatives == "teacher_rejected":
            negative = terms.gate < 0.5
        else:
            negative = (batch.advantages.to(terms.logp.device) < 0)[:, None].expand_as(terms.gate)
        negative = negative & terms.mask
        weight = 1.0 - terms.gate if self.weight_by_gate else torch.ones_like(terms.gate)
        contrastive = cringe_contrastive(scores.sampled_logit, self._pseudo_positive(scores.top_logits),
                                         self.detach_positive)
        base_credit = terms.gate if terms.credit is None else terms.credit
        terms.credit = torch.where(negative, torch.zeros_like(base_credit), base_credit)
        terms.penalties["cringe"] = torch.where(negative, weight * contrastive, torch.zeros_like(contrastive))
        terms.coefficients = dict(terms.coefficients, cringe=terms.coefficients["distill"])
        self._negative_tokens += float(negative.sum())
        self._tokens += float(terms.mask.sum())
        return terms

    def metrics(self) -> dict[str, float]:
        return {"negative_fraction": self._negative_tokens / self._tokens} if self._tokens else {}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state() if self.generator is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator = restore_generator(state.get("generator")) or self.generator
