"""Credit pillars: switchable transformations of the baseline's loss terms."""

from craft_pl.pillars.base import STAGE_COEFFICIENTS, STAGE_CREDIT, STAGE_PENALTIES, CreditPillar, canonical_order

__all__ = ["CreditPillar", "canonical_order", "STAGE_CREDIT", "STAGE_COEFFICIENTS", "STAGE_PENALTIES"]
