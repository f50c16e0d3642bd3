"""Credit pillars: switchable transformations of the baseline's loss terms."""

from craft_pl.pillars.base import STAGE_COEFFICIENTS, STAGE_CREDIT, STAGE_PENALTIES, CreditPillar, canonical_order


def craft_pillars() -> list[CreditPillar]:
    """CRAFT's three pillars with the spec's defaults (what ``model.pillars: null`` means)."""
    from craft_pl.pillars.controller import AsymmetricController
    from craft_pl.pillars.cti import CounterfactualTokenImportance
    from craft_pl.pillars.polar_kl import PolarisedKL

    return [CounterfactualTokenImportance(), AsymmetricController(), PolarisedKL()]


__all__ = ["CreditPillar", "canonical_order", "craft_pillars", "STAGE_CREDIT", "STAGE_COEFFICIENTS", "STAGE_PENALTIES"]
