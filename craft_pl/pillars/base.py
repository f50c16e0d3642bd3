"""``CreditPillar``: a switchable transformation of the baseline's loss terms.

Life cycle per RL step: ``prepare(batch)`` once on the whole step (group-level work), ``transform(terms, batch)``
per mini-batch, ``update(stats)`` after the step. Pillars run in a canonical order (``stage``, then ``name``), so
the order of the YAML list never changes a bit. A pillar constructed with ``enabled: false`` is dropped from the
active list and runs no code on the loss path.
"""

from __future__ import annotations

from typing import Any, ClassVar

from craft_pl.objective import LossTerms
from craft_pl.batch import RolloutBatch

STAGE_CREDIT = 0
"""Pillars that set the per-token credit (run first)."""
STAGE_COEFFICIENTS = 1
"""Pillars that rescale coefficients."""
STAGE_PENALTIES = 2
"""Pillars that replace or add penalty terms (run last)."""


class CreditPillar:
    """Base class of the credit pillars (no-op in every hook)."""

    stage: ClassVar[int] = STAGE_PENALTIES
    name: ClassVar[str] = "pillar"
    requires_distillation: ClassVar[bool] = False
    """Whether the pillar works on the distillation term (so needs ``distill_coef > 0``)."""
    inspected_extras: ClassVar[tuple[str, ...]] = ()
    """Per-token ``batch.extras`` this pillar writes that credit inspection shows (``credit/<name>`` histograms)."""

    @property
    def reads_old_logp_in_prepare(self) -> bool:
        """Whether ``prepare`` reads ``batch.old_logp`` (which on-policy steps otherwise take from the update)."""
        return False

    @property
    def logits_top_k(self) -> int:
        """How many competing logits per token the training forward must return (0 = none)."""
        return 0

    @property
    def needs_full_distribution(self) -> bool:
        """Whether the teacher's scoring and the training forward must return the whole next-token distribution
        (``ResponseScores.log_probs``; the teacher's lands in ``batch.extras["teacher_log_probs"]``)."""
        return False

    def __init__(self, enabled: bool = True) -> None:
        """
        Args:
            enabled: False removes the pillar from the loss path entirely (the baseline's bits are unchanged).
        """
        self.enabled = enabled

    def validate(self, objective) -> None:
        """Raise ``ValueError`` (naming the fix) when this pillar cannot work with ``objective``."""
        if self.requires_distillation and not objective.use_distill:
            raise ValueError(f"model.pillars: {self.name} needs model.objective.distill_coef > 0 (a teacher)")

    def check_data(self, group_size: int) -> None:
        """Warn (or raise ``ValueError`` naming the fix) when the data settings leave this pillar nothing to do."""

    def prepare(self, batch: RolloutBatch) -> None:
        """Group-level work once per RL step, after advantages and teacher log-probs exist."""

    def transform(self, terms: LossTerms, batch: RolloutBatch) -> LossTerms:
        """Per mini-batch: return the terms to compose (may modify and return ``terms``)."""
        return terms

    def update(self, stats: dict[str, float]) -> None:
        """After the RL step, with the step's averaged training metrics."""

    def metrics(self) -> dict[str, float]:
        """Scalars to log under ``pillar/<name>/...``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


def canonical_order(pillars: list[CreditPillar]) -> list[CreditPillar]:
    """The enabled pillars sorted by (stage, name); raises on two pillars of the same name."""
    active = [p for p in pillars if p.enabled]
    names = [p.name for p in active]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"model.pillars lists {duplicates} more than once; keep one entry per pillar")
    return sorted(active, key=lambda p: (p.stage, p.name))
