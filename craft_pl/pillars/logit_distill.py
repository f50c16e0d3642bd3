"""Logit-level distillation: the teacher's whole next-token distribution, not only the sampled token's log-prob.

SDAR's sampled-token surrogate ``w * (lp_T - lp)`` has the gradient ``-w * grad(lp)``: it re-weights the token the
student sampled and nothing else, so it cannot move probability to a token the teacher prefers where the student
never samples it. This term compares the two distributions over the whole vocabulary at every response position
(the built-in model's 1,024 tokens; the teacher's distribution is scored with the rollout, no extra forward):

    forward  KL(T || S)_t = sum_v p_T(v) (log p_T(v) - log p_S(v))     gradient on the logits: p_S - p_T
    reverse  KL(S || T)_t = sum_v p_S(v) (log p_S(v) - log p_T(v))

    penalty_t = w_t * KL_t,   w_t = the SDAR gate g_t, or Pillar 1's credit c_t where it set one (negative credit
                              counts as 0: "do not imitate here", never "move away from the teacher", which has no
                              lower bound)

with the distillation coefficient (after Pillar 2's rescaling) as its coefficient. With ``replace_sampled`` (default)
the sampled-token term's coefficient becomes 0, so the method distils through this term alone. Off (absent or
``enabled: false``) it runs no code and the teacher's distribution is not even scored.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from craft_pl.batch import RolloutBatch
from craft_pl.objective import LossTerms, token_mean
from craft_pl.pillars.base import STAGE_PENALTIES, CreditPillar

TEACHER_LOG_PROBS = "teacher_log_probs"
"""``batch.extras`` key of the teacher's next-token log-probs ``[rows, tokens, vocab]``."""


def full_kl(teacher_log_probs: torch.Tensor, student_log_probs: torch.Tensor,
            direction: Literal["forward", "reverse"]) -> torch.Tensor:
    """Per-position KL over the vocabulary ``[rows, tokens]`` from log-probs ``[rows, tokens, vocab]``: forward
    KL(T || S) or reverse KL(S || T). Positions whose two rows are all zeros (padding) give 0."""
    if direction == "forward":
        return (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1)
    return (student_log_probs.exp() * (student_log_probs - teacher_log_probs)).sum(-1)


class LogitDistillation(CreditPillar):
    """Distils the teacher's whole next-token distribution, weighted per position by the gate or the credit."""

    stage = STAGE_PENALTIES
    name = "logit_distill"
    requires_distillation = True

    @property
    def needs_full_distribution(self) -> bool:
        return True

    def __init__(self, enabled: bool = True, direction: Literal["forward", "reverse"] = "forward",
                 replace_sampled: bool = True) -> None:
        """
        Args:
            enabled: False removes the pillar from the loss path entirely (the baseline's bits are unchanged).
            direction: ``forward`` KL(teacher || student) (mode-covering: raises every token the teacher likes) or
                ``reverse`` KL(student || teacher) (mode-seeking).
            replace_sampled: Set the sampled-token distillation term's coefficient to 0 (this term replaces it);
                False keeps both, each with the distillation coefficient.
        """
        super().__init__(enabled)
        if direction not in ("forward", "reverse"):
            raise ValueError(f"logit_distill.direction must be 'forward' or 'reverse', got {direction!r}")
        self.direction = direction
        self.replace_sampled = replace_sampled
        self._metrics: dict[str, float] = {}

    def transform(self, terms: LossTerms, batch: RolloutBatch) -> LossTerms:
        if TEACHER_LOG_PROBS not in batch.extras or terms.logits is None or terms.logits.log_probs is None:
            raise ValueError("logit_distill needs the teacher's and the student's whole next-token distributions "
                             "(scored when the loss recipe lists this pillar); build the batch through "
                             "craft_pl.rollout.experience")
        student = terms.logits.log_probs
        teacher = batch.extras[TEACHER_LOG_PROBS].to(student.device)
        kl = full_kl(teacher, student, self.direction)
        weight = terms.gate if terms.credit is None else terms.credit.clamp_min(0.0)
        terms.penalties[self.name] = weight.detach() * kl
        coefficient = terms.coefficients["distill"]
        terms.coefficients = dict(terms.coefficients, **{self.name: coefficient})
        if self.replace_sampled:
            terms.coefficients["distill"] = 0.0
        self._metrics = {"kl_mean": float(token_mean(kl.detach(), terms.mask, int(terms.mask.sum()) or 1))}
        return terms

    def metrics(self) -> dict[str, float]:
        """``pillar/logit_distill/kl_mean``: the last mini-batch's mean per-position KL (unweighted)."""
        return dict(self._metrics)

    def state_dict(self) -> dict[str, Any]:
        return {}
