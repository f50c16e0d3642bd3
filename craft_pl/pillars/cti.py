"""Pillar 1: Counterfactual Token Importance (docs/methods.md#pillar-1-counterfactual-token-importance).

For group b, trajectory i and aligned position t (notation of docs/methods.md):

    J_t        = { j : trajectory j has a token at position t }          active siblings
    J_t^{-i}   = J_t \\ {i}                                               leave-one-out
    u_t^(j)    = clip(Δ_t^(j), -Δ_max, Δ_max) / τ                         Δ = lp_T - lp_old (rollout time)
    w_t^(j|i)  = exp(u_t^(j)) / Σ_{m ∈ J_t^{-i}} exp(u_t^(m))             self-normalised weights
    Ā_t^(i)    = Σ_{j ∈ J_t^{-i}} w_t^(j|i) A^(j)
    CTI_t^(i)  = Ā_t^(i) - A^(i)                                          ("self" baseline, the default)
               = Ā_t^(i) - mean_{j ∈ J_t^{-i}} A^(j)                      ("group_loo" baseline)
    ESS_t^(i)  = 1 / Σ_j (w_t^(j|i))²
    valid_t^(i)= (t active for i) ∧ |J_t^{-i}| >= n_min ∧ ESS_t^(i) >= ess_min

The signed credit that replaces the SDAR gate g as distillation weight is, where valid (default ``gate_tanh``),
``c = g · tanh(CTI / κ)``; where not valid it falls back to ``c = g`` (plain SDAR; ``fallback: none``: c = 0). What the estimator measures
(docs/methods.md#what-the-estimator-measures): at τ = 1 Ā converges to "draw the action at t from the teacher, continue on-policy"; G = 2 carries
no teacher information (the one sibling has weight 1); with binary rewards sign(CTI) = -sign(A^(i)).

Everything here is deterministic (no RNG), runs without gradient, and never modifies its inputs in place.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch

from craft_pl.objective import LossTerms
from craft_pl.pillars.base import STAGE_CREDIT, CreditPillar
from craft_pl.batch import RolloutBatch
from craft_pl.pillars.cti_estimator import (  # noqa: F401 - re-exported
    ALIGNS,
    CREDIT_MODES,
    BASELINES,
    SIBLING_ADVANTAGES,
    GAP_SOURCES,
    CHUNK_ELEMENTS,
    FALLBACKS,
    Align,
    CreditMode,
    Baseline,
    CTIResult,
    GroupLayout,
    counterfactual_token_importance,
    credit_from_cti,
    group_layout,
    groups_to_rows,
    rows_to_groups,
    trajectory_advantages,
)
from craft_pl.pillars.cti_per_state import (
    GROUPINGS,
    STATE_ALIGNS,
    Grouping,
    anchor_coverage,
    state_advantages,
    state_layout,
)


log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------ pillar
class CounterfactualTokenImportance(CreditPillar):
    """Pillar 1: replaces the SDAR gate by a signed credit from sibling-based counterfactual token importance."""

    stage = STAGE_CREDIT
    name = "cti"
    requires_distillation = True
    inspected_extras = ("cti",)

    @property
    def reads_old_logp_in_prepare(self) -> bool:
        return self.gap_source == "old"

    def check_data(self, group_size: int) -> None:
        if group_size < 4:
            log.warning("Pillar 1 (cti) with data.group_size=%d: with G = 2 the one sibling always gets weight 1 and "
                        "carries no teacher signal; use data.group_size >= 4 (the paper uses 8)", group_size)

    def __init__(
        self,
        enabled: bool = True,
        tau: float = 1.0,
        gap_clip: float = 5.0,
        kappa: float = 1.0,
        n_min: int = 2,
        ess_min: float = 1.5,
        align: Align = "flat",
        credit_mode: CreditMode = "gate_tanh",
        cti_baseline: Baseline = "self",
        sibling_advantage: Literal["trajectory", "row"] = "trajectory",
        gap_source: Literal["old", "sampling"] = "old",
        dead_zone: float = 1e-6,
        grouping: Grouping = "group",
        fallback: Literal["gate", "none"] = "gate",
    ) -> None:
        """
        Args:
            enabled: False removes the pillar from the loss path entirely (the baseline's bits are unchanged).
            tau: Temperature of the teacher tilt exp(Δ/τ); 1 targets the teacher counterfactual.
            gap_clip: Δ_max: the teacher-student gap is clipped to [-gap_clip, gap_clip] before weighting.
            kappa: Credit scale κ in tanh(CTI/κ).
            n_min: Fewest active siblings (others than the trajectory itself) for a valid CTI.
            ess_min: Smallest effective sample size 1/Σw² for a valid CTI.
            align: Sibling alignment: flattened token index, (turn, position), or one CTI per turn.
            credit_mode: g·tanh(CTI/κ), tanh(CTI/κ), (2g-1)·tanh(CTI/κ), or g·sign(CTI).
            cti_baseline: Subtract the trajectory's own advantage ("self") or the siblings' mean ("group_loo").
            sibling_advantage: A^(j) as the mean of the trajectory's row advantages, or each row's own advantage.
            gap_source: Gap Δ = teacher_logp minus old_logp ("old") or minus sampling_logp ("sampling").
            dead_zone: |CTI| below dead_zone × the group's max |A| (1 if that is 0) counts as 0 (credit 0).
            grouping: Siblings: the whole group, or ("anchor") only rows of the same turn and state; align turn(_token).
            fallback: Credit of a token without a valid CTI: the plain SDAR gate g ("gate"), or 0 ("none": no
                distillation on it; with ``grouping: anchor`` that is every token without n_min same-state siblings).
        """
        super().__init__(enabled)
        for arg, value in (("tau", tau), ("gap_clip", gap_clip), ("kappa", kappa)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"cti.{arg} must be a finite number > 0, got {value!r}")
        if isinstance(n_min, bool) or not isinstance(n_min, int) or n_min < 1:
            raise ValueError(f"cti.n_min must be an integer >= 1, got {n_min!r}")
        for arg, value in (("ess_min", ess_min), ("dead_zone", dead_zone)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"cti.{arg} must be a finite number >= 0, got {value!r}")
        for arg, value, allowed in (("align", align, ALIGNS), ("credit_mode", credit_mode, CREDIT_MODES),
                                    ("cti_baseline", cti_baseline, BASELINES),
                                    ("sibling_advantage", sibling_advantage, SIBLING_ADVANTAGES),
                                    ("gap_source", gap_source, GAP_SOURCES), ("fallback", fallback, FALLBACKS)):
            if value not in allowed:
                raise ValueError(f"cti.{arg} must be one of {allowed}, got {value!r}")
        if grouping not in GROUPINGS:
            raise ValueError(f"cti.grouping must be one of {GROUPINGS}, got {grouping!r}")
        if grouping == "anchor" and align not in STATE_ALIGNS:
            raise ValueError(f"cti.grouping='anchor' compares rows of the same turn: set cti.align to one of "
                             f"{STATE_ALIGNS} (got {align!r}; flat positions of siblings lie in different turns)")
        self.tau = float(tau)
        self.gap_clip = float(gap_clip)
        self.kappa = float(kappa)
        self.n_min = n_min
        self.ess_min = float(ess_min)
        self.align = align
        self.credit_mode = credit_mode
        self.cti_baseline = cti_baseline
        self.sibling_advantage = sibling_advantage
        self.gap_source = gap_source
        self.dead_zone = float(dead_zone)
        self.grouping = grouping
        self.fallback = fallback
        self._metrics: dict[str, float] = {}

    # -------------------------------------------------------------------------------------------- prepare
    def prepare(self, batch: RolloutBatch) -> None:
        """Compute CTI for every response token of the step; store it in ``batch.extras``.

        Writes ``extras["cti"]`` (float, 0 where not valid), ``extras["cti_valid"]`` (bool) and
        ``extras["cti_phi"]`` (φ = tanh(CTI/κ) where valid, else 1.0), all ``[rows, tokens]`` in the batch's row
        order. Reads ``advantages``, ``teacher_logp``, ``old_logp``/``sampling_logp`` without modifying them.
        """
        student = batch.old_logp if self.gap_source == "old" else batch.sampling_logp
        if batch.teacher_logp is None or student is None:
            source = "old_logp" if self.gap_source == "old" else "sampling_logp"
            raise ValueError(f"cti needs batch.teacher_logp and batch.{source} before prepare (gap_source="
                             f"{self.gap_source!r})")
        if batch.advantages is None:
            raise ValueError("cti needs batch.advantages: run the objective's prepare first")
        with torch.no_grad():
            teacher = batch.teacher_logp.detach()
            gap = teacher - student.detach().to(teacher.device)
            row_advantages = batch.advantages.detach().to(device=gap.device, dtype=gap.dtype)
            if self.grouping == "anchor":
                layout, adv_groups = self._state_inputs(batch, row_advantages)
            else:
                layout = group_layout(batch.group_ids, batch.trajectory_ids, batch.turn_index, batch.response_mask,
                                      self.align)
                if self.sibling_advantage == "trajectory":
                    adv_groups = trajectory_advantages(row_advantages, layout)
                else:
                    adv_groups = rows_to_groups(row_advantages, layout)
            gap_groups = rows_to_groups(gap, layout)
            mask_groups = layout.token_mask().to(gap.device)
            result = self._estimate(gap_groups, mask_groups, adv_groups)

            cti = groups_to_rows(result.cti, layout, 0.0)
            valid = groups_to_rows(result.valid, layout, False)
            cti = torch.where(valid, cti, torch.zeros((), dtype=cti.dtype, device=cti.device))
            batch.extras["cti"] = cti
            batch.extras["cti_valid"] = valid
            batch.extras["cti_phi"] = torch.where(valid, torch.tanh(cti / self.kappa), torch.ones_like(cti))
            own = (adv_groups[:, :, None].expand_as(gap_groups) if adv_groups.dim() == 2 else adv_groups)
            self._metrics = self._diagnostics(
                mask=layout.mask.to(gap.device), cti=cti, valid=valid,
                ess=groups_to_rows(result.ess, layout, 0.0),
                n_siblings=groups_to_rows(result.n_siblings, layout, 0),
                max_weight=groups_to_rows(result.max_weight, layout, 0.0),
                own_advantage=groups_to_rows(own, layout, 0.0),
                group_size=layout.group_sizes.to(gap.device)[layout.group.to(gap.device)],
            )
            if self.grouping == "anchor":
                self._metrics["anchor_coverage"] = anchor_coverage(
                    layout.mask.to(gap.device), groups_to_rows(result.n_siblings, layout, 0))

    def _state_inputs(self, batch: RolloutBatch, row_advantages: torch.Tensor):
        """``grouping="anchor"``: the state-group layout and A^(j) placed in it (see ``cti_per_state.py``)."""
        anchors = getattr(batch, "anchor_ids", None)
        if anchors is None:
            raise ValueError("cti.grouping='anchor' needs batch.anchor_ids (the anchor state of each row); build the "
                             "batch with craft_pl.batch.RolloutBatch or set cti.grouping: group")
        layout = state_layout(batch.group_ids, batch.trajectory_ids, batch.turn_index, anchors, batch.response_mask,
                              self.align)
        return layout, state_advantages(row_advantages, batch.group_ids, batch.trajectory_ids, batch.turn_index,
                                        batch.response_mask, layout, self.sibling_advantage)

    def _estimate(self, gap: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> CTIResult:
        """The estimator over chunks of groups (bounded memory; groups are independent, so no bit changes)."""
        batch, size, length = gap.shape
        chunk = max(1, CHUNK_ELEMENTS // max(1, size * size * length))
        parts = [counterfactual_token_importance(gap[s:s + chunk], mask[s:s + chunk], advantages[s:s + chunk],
                                                 self.tau, self.gap_clip, self.n_min, self.ess_min,
                                                 self.cti_baseline, self.dead_zone)
                 for s in range(0, batch, chunk)]
        if len(parts) == 1:
            return parts[0]
        return CTIResult(**{key: torch.cat([getattr(p, key) for p in parts])
                            for key in ("cti", "a_bar", "ess", "valid", "n_siblings", "max_weight")})

    @staticmethod
    def _diagnostics(mask, cti, valid, ess, n_siblings, max_weight, own_advantage, group_size) -> dict[str, float]:
        """Token-weighted scalars over the step's response tokens (0.0 where a quantity is undefined)."""
        tokens = int(mask.sum())
        estimated = mask & (n_siblings > 0)                      # tokens with at least one active sibling
        n_estimated, n_valid = int(estimated.sum()), int(valid.sum())
        ratio = ess / (group_size[:, None] - 1).clamp_min(1).to(ess.dtype)

        def mean(values, where, count):
            return float(values[where].double().sum() / count) if count else 0.0

        corr = 0.0
        if n_valid >= 2:
            x, y = cti[valid].double(), own_advantage[valid].double()
            x, y = x - x.mean(), y - y.mean()
            denominator = float((x.square().sum() * y.square().sum()).sqrt())
            corr = float((x * y).sum()) / denominator if denominator > 0 else 0.0
        return {
            "ess_mean": mean(ess, estimated, n_estimated),
            "ess_ratio": mean(ratio, estimated, n_estimated),
            "valid_fraction": n_valid / tokens if tokens else 0.0,
            "negative_credit_fraction": int((valid & (cti < 0)).sum()) / tokens if tokens else 0.0,
            "max_weight": mean(max_weight, valid, n_valid),
            "corr_with_advantage": corr,
        }

    # ------------------------------------------------------------------------------------------ transform
    def transform(self, terms: LossTerms, batch: RolloutBatch) -> LossTerms:
        """Set ``terms.credit`` (detached) from the gate and the stored CTI; no other field changes."""
        if terms.gate is None:
            raise ValueError("cti reshapes the distillation credit: it needs model.objective.distill_coef > 0")
        if "cti" not in batch.extras or "cti_valid" not in batch.extras:
            raise RuntimeError("cti.transform called on a batch that cti.prepare has not seen")
        gate = terms.gate
        width = gate.shape[1]
        cti = _fit_width(batch.extras["cti"], width, 0.0).to(device=gate.device)
        valid = _fit_width(batch.extras["cti_valid"], width, False).to(device=gate.device)
        terms.credit = credit_from_cti(gate, cti, valid, self.kappa, self.credit_mode, self.fallback)
        return terms

    def metrics(self) -> dict[str, float]:
        """``ess_mean``, ``ess_ratio`` (ESS/(G-1)), ``valid_fraction``, ``negative_credit_fraction`` (valid tokens with
        CTI < 0, over all response tokens), ``max_weight`` (mean over valid tokens of max_j w) and
        ``corr_with_advantage`` (Pearson, CTI vs the token's own A over valid tokens) of the last ``prepare``; with
        ``grouping="anchor"`` also ``anchor_coverage`` (share of response tokens with a same-state sibling), and the
        ESS ratio is taken against the state group's size."""
        return dict(self._metrics)


def _fit_width(values: torch.Tensor, width: int, fill: float | bool) -> torch.Tensor:
    """Cut or pad ``[rows, tokens]`` to ``width`` columns (mini-batches may be scored narrower than the step)."""
    if values.shape[1] >= width:
        return values[:, :width]
    pad = torch.full((values.shape[0], width - values.shape[1]), fill, dtype=values.dtype, device=values.device)
    return torch.cat([values, pad], dim=1)
