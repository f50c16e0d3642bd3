"""The Pillar-1 estimator and the row <-> group layout it works on (the pillar itself is ``cti.py``).

See ``cti.py`` for the equations; everything here is deterministic, gradient-free and never modifies inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Align = Literal["flat", "turn_token", "turn"]
CreditMode = Literal["gate_tanh", "tanh", "signed_gate", "gate_sign"]
Baseline = Literal["self", "group_loo"]

ALIGNS = ("flat", "turn_token", "turn")
CREDIT_MODES = ("gate_tanh", "tanh", "signed_gate", "gate_sign")
BASELINES = ("self", "group_loo")
SIBLING_ADVANTAGES = ("trajectory", "row")
GAP_SOURCES = ("old", "sampling")
FALLBACKS = ("gate", "none")

CHUNK_ELEMENTS = 1 << 24
"""Largest [groups, G, G, T] weight tensor built at once by the pillar (groups are independent, so chunking over
them changes no bit)."""


# ---------------------------------------------------------------------------------------------------- estimator
@dataclass
class CTIResult:
    """Output of :func:`counterfactual_token_importance`; every tensor is ``[B, G, T]`` unless noted.

    Entries at inactive (b, i, t) are 0 (``valid`` False). ``weights`` is ``[B, i, j, T]`` when requested.
    """

    cti: torch.Tensor
    """CTI_t^(i), exactly 0 where every active sibling's advantage equals the baseline, and in the dead-zone."""
    a_bar: torch.Tensor
    """Ā_t^(i) = Σ_j w_t^(j|i) A^(j) (0 where i has no active sibling)."""
    ess: torch.Tensor
    """ESS_t^(i) = 1 / Σ_j w² in [1, |J^{-i}|] (0 where i has no active sibling)."""
    valid: torch.Tensor
    """bool: active ∧ n_siblings >= n_min ∧ ESS >= ess_min."""
    n_siblings: torch.Tensor
    """|J_t^{-i}| (long)."""
    max_weight: torch.Tensor
    """max_j w_t^(j|i) (0 where i has no active sibling)."""
    weights: torch.Tensor | None = None
    """w_t^(j|i) ``[B, i, j, T]``, 0 for j ∉ J_t^{-i}; only with ``return_weights=True``."""


def counterfactual_token_importance(
    gap: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    tau: float = 1.0,
    gap_clip: float = 5.0,
    n_min: int = 2,
    ess_min: float = 1.5,
    baseline: Baseline = "self",
    dead_zone: float = 0.0,
    return_weights: bool = False,
) -> CTIResult:
    """Leave-one-out self-normalised counterfactual token importance on padded groups.

    Args:
        gap: Δ_t^(j) = lp_T - lp_old ``[B, G, T]``; values where ``mask`` is False are never read (may be NaN).
        mask: ``[B, G, T]`` bool, True where trajectory j has a token at position t (padded slots all False).
        advantages: A^(j) ``[B, G]`` (one per trajectory) or ``[B, G, T]`` (per token, e.g. per-row advantages).
        tau: temperature τ > 0 of the tilt (τ = 1 targets the teacher counterfactual).
        gap_clip: Δ_max, the gap is clipped to [-Δ_max, Δ_max] before dividing by τ.
        n_min: minimum |J_t^{-i}| for a valid estimate.
        ess_min: minimum ESS for a valid estimate.
        baseline: "self" (CTI = Ā - A^(i)) or "group_loo" (CTI = Ā - mean of the active siblings' A).
        dead_zone: |CTI| < dead_zone · s_b is written as exactly 0, with s_b = max |A| over group b's active tokens
            (1 where that is 0).
        return_weights: also return the ``[B, i, j, T]`` weights.

    The weights are a softmax over j of a ``[B, i, j, T]`` logits tensor that is -inf on the diagonal i = j and on
    inactive siblings; where i has no active sibling the softmax runs on zeros and is then masked, so no NaN ever
    appears. CTI is set to exactly 0 (not left to rounding) wherever every active sibling's advantage equals
    A^(i) (``self``) or all active siblings share one advantage (``group_loo``).
    """
    if gap.dim() != 3 or mask.shape != gap.shape:
        raise ValueError(f"gap and mask must both be [B, G, T], got {tuple(gap.shape)} and {tuple(mask.shape)}")
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    batch, size, length = gap.shape
    dtype = gap.dtype if gap.is_floating_point() else torch.float32
    mask = mask.to(torch.bool)
    if advantages.shape == (batch, size):
        advantages = advantages[:, :, None].expand(batch, size, length)
    elif advantages.shape != gap.shape:
        raise ValueError(f"advantages must be [B, G] or [B, G, T], got {tuple(advantages.shape)}")
    adv = torch.where(mask, advantages.to(dtype), torch.zeros((), dtype=dtype, device=gap.device))  # [B, G, T]

    eye = torch.eye(size, dtype=torch.bool, device=gap.device)[None, :, :, None]          # [1, i, j, 1]
    siblings = mask[:, None, :, :] & ~eye                                                  # [B, i, j, T]: j ∈ J^{-i}
    n_siblings = siblings.sum(dim=2)                                                       # [B, i, T]
    has_sibling = n_siblings > 0

    u = gap.to(dtype).clamp(-gap_clip, gap_clip) / tau                                    # [B, j, T]
    logits = torch.where(siblings, u[:, None, :, :], float("-inf"))                        # [B, i, j, T]
    logits = torch.where(has_sibling[:, :, None, :], logits, 0.0)                          # no sibling: no NaN
    weights = torch.where(siblings, torch.softmax(logits, dim=2), 0.0)                     # w^(j|i)

    a_j = adv[:, None, :, :]                                                               # [B, 1, j, T]
    a_bar = (weights * a_j).sum(dim=2)                                                     # Ā^(i)  [B, i, T]
    if baseline == "self":
        reference = adv
        informative = (siblings & (a_j != adv[:, :, None, :])).any(dim=2)
    else:
        reference = torch.where(siblings, a_j, 0.0).sum(dim=2) / n_siblings.clamp_min(1)
        highest = torch.where(siblings, a_j, float("-inf")).amax(dim=2)
        lowest = torch.where(siblings, a_j, float("inf")).amin(dim=2)
        informative = highest > lowest
    zero = torch.zeros((), dtype=dtype, device=gap.device)
    cti = torch.where(informative & mask, a_bar - reference, zero)
    if dead_zone > 0:
        scale = adv.abs().amax(dim=(1, 2))
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        cti = torch.where(cti.abs() < dead_zone * scale[:, None, None], zero, cti)

    square_sum = weights.pow(2).sum(dim=2)
    ess = torch.where(has_sibling, 1.0 / square_sum.clamp_min(torch.finfo(dtype).tiny), zero)
    valid = mask & (n_siblings >= n_min) & (ess >= ess_min)
    return CTIResult(
        cti=cti,
        a_bar=torch.where(mask, a_bar, zero),
        ess=torch.where(mask, ess, zero),
        valid=valid,
        n_siblings=torch.where(mask, n_siblings, 0),
        max_weight=torch.where(mask, weights.amax(dim=2), zero),
        weights=weights if return_weights else None,
    )


def credit_from_cti(gate: torch.Tensor, cti: torch.Tensor, valid: torch.Tensor, kappa: float,
                    mode: CreditMode = "gate_tanh", fallback: str = "gate") -> torch.Tensor:
    """The signed per-token credit c ``[rows, tokens]`` from the gate g and CTI (all ``[rows, tokens]``).

    Where ``valid``: ``gate_tanh`` c = g·tanh(CTI/κ); ``tanh`` c = tanh(CTI/κ);
    ``signed_gate`` c = (2g-1)·tanh(CTI/κ); ``gate_sign`` c = g·sign(CTI). Elsewhere ``fallback``: ``gate``
    c = g (the plain SDAR gate), ``none`` c = 0 (no distillation on that token). Detached.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    cti = cti.to(gate.dtype)
    if mode == "gate_tanh":
        signed = gate * torch.tanh(cti / kappa)
    elif mode == "tanh":
        signed = torch.tanh(cti / kappa)
    elif mode == "signed_gate":
        signed = (2.0 * gate - 1.0) * torch.tanh(cti / kappa)
    elif mode == "gate_sign":
        signed = gate * torch.sign(cti)
    else:
        raise ValueError(f"credit_mode must be one of {CREDIT_MODES}, got {mode!r}")
    otherwise = gate if fallback == "gate" else torch.zeros_like(gate)
    return torch.where(valid, signed, otherwise).detach()


# ------------------------------------------------------------------------------------------ rows <-> groups
@dataclass
class GroupLayout:
    """Where each response token of a ``RolloutBatch`` sits in the padded ``[B, G, T]`` group tensors.

    Groups are numbered by sorted group id, trajectories inside a group by sorted trajectory id, and the rows of a
    trajectory are ordered by ``turn_index``: the layout depends on the ids only, never on the row order.
    """

    align: str
    group: torch.Tensor
    """b of each row ``[rows]``."""
    slot: torch.Tensor
    """j of each row inside its group ``[rows]``."""
    position: torch.Tensor
    """Aligned index t of each response token ``[rows, tokens]`` (-1 where ``mask`` is False)."""
    mask: torch.Tensor
    """The response mask ``[rows, tokens]`` (bool)."""
    group_sizes: torch.Tensor
    """Trajectories per group ``[B]``."""
    num_groups: int
    group_size: int
    length: int

    def token_mask(self) -> torch.Tensor:
        """``[B, G, T]`` bool: True where trajectory j has a (response token / turn) at position t."""
        out = torch.zeros(self.num_groups, self.group_size, self.length, dtype=torch.bool,
                          device=self.mask.device)
        rows, cols = self.mask.nonzero(as_tuple=True)
        out[self.group[rows], self.slot[rows], self.position[rows, cols]] = True
        return out


def group_layout(group_ids: torch.Tensor, trajectory_ids: torch.Tensor, turn_index: torch.Tensor,
                 response_mask: torch.Tensor, align: Align = "flat") -> GroupLayout:
    """The aligned position of every response token.

    ``flat``: t = Σ_{k'<k} len_{k'} + ℓ over the trajectory's rows sorted by turn index (ℓ = rank of the token
    among its row's response tokens); ``turn_token``: t = k · L_max + ℓ (same turn k and position ℓ);
    ``turn``: t = k for every token of turn k (one position per (trajectory, turn)).
    ids ``[rows]`` (long), response_mask ``[rows, tokens]``. Raises if two rows share (group, trajectory, turn).
    """
    if align not in ALIGNS:
        raise ValueError(f"align must be one of {ALIGNS}, got {align!r}")
    device = response_mask.device
    group_ids, trajectory_ids, turn_index = (x.to(device=device, dtype=torch.long)
                                             for x in (group_ids, trajectory_ids, turn_index))
    mask = response_mask.to(torch.bool)
    rows = mask.shape[0]
    if rows == 0:
        raise ValueError("CTI needs at least one row")
    if bool((turn_index < 0).any()):
        raise ValueError("turn_index must be >= 0")
    groups, group = torch.unique(group_ids, return_inverse=True)
    trajectories, trajectory = torch.unique(torch.stack([group_ids, trajectory_ids], dim=1), dim=0,
                                            return_inverse=True)
    # unique pairs are sorted by group id first, so each group's trajectories are consecutive
    trajectory_group = torch.searchsorted(groups, trajectories[:, 0].contiguous())
    group_sizes = torch.bincount(trajectory_group, minlength=groups.numel())
    first = torch.cumsum(group_sizes, 0) - group_sizes
    slot = (torch.arange(trajectories.shape[0], device=device) - first[trajectory_group])[trajectory]

    turns = int(turn_index.max()) + 1
    key = trajectory * turns + turn_index
    if torch.unique(key).numel() != rows:
        raise ValueError("two rows share the same (group_id, trajectory_id, turn_index)")
    lengths = mask.sum(dim=1)
    rank = torch.cumsum(mask.long(), dim=1) - 1                              # ℓ: position among response tokens
    if align == "flat":
        order = torch.argsort(key)
        sorted_lengths = lengths[order]
        exclusive = torch.cumsum(sorted_lengths, 0) - sorted_lengths
        sorted_trajectory = trajectory[order]
        start = torch.full((trajectories.shape[0],), torch.iinfo(torch.long).max, device=device)
        start = start.scatter_reduce(0, sorted_trajectory, exclusive, reduce="amin")
        offset = torch.empty_like(exclusive)
        offset[order] = exclusive - start[sorted_trajectory]
        position = offset[:, None] + rank
        length = int((offset + lengths).max())
    elif align == "turn_token":
        width = max(1, int(lengths.max()))
        position = turn_index[:, None] * width + rank
        length = turns * width
    else:
        position = turn_index[:, None].expand_as(rank)
        length = turns
    position = torch.where(mask, position, torch.full_like(position, -1))
    return GroupLayout(align=align, group=group, slot=slot, position=position, mask=mask,
                       group_sizes=group_sizes, num_groups=groups.numel(), group_size=int(group_sizes.max()),
                       length=max(1, length))


def rows_to_groups(values: torch.Tensor, layout: GroupLayout, fill: float = 0.0) -> torch.Tensor:
    """Scatter row values into ``[B, G, T]`` (``fill`` where no token).

    ``values`` is ``[rows]`` (one value per row, placed at each of its positions) or ``[rows, tokens]`` (one per
    token; with ``align="turn"`` the row's response tokens are averaged first, the spec's Δ̄_k). Masked entries of
    ``values`` are never read.
    """
    device = values.device
    mask = layout.mask.to(device)
    group, slot, position = (x.to(device) for x in (layout.group, layout.slot, layout.position))
    out = torch.full((layout.num_groups, layout.group_size, layout.length), fill, dtype=values.dtype, device=device)
    if values.dim() == 2 and layout.align == "turn":
        counts = mask.sum(dim=1)
        sums = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=device)).sum(dim=1)
        values = sums / counts.clamp_min(1)
    if values.dim() == 1:
        values = values[:, None].expand(mask.shape)
    rows, cols = mask.nonzero(as_tuple=True)
    out[group[rows], slot[rows], position[rows, cols]] = values[rows, cols]
    return out


def groups_to_rows(values: torch.Tensor, layout: GroupLayout, fill: float | bool = 0) -> torch.Tensor:
    """Gather ``[B, G, T]`` back to ``[rows, tokens]`` in the batch's row order (``fill`` off the response mask)."""
    device = values.device
    mask = layout.mask.to(device)
    group, slot, position = (x.to(device) for x in (layout.group, layout.slot, layout.position))
    out = torch.full(mask.shape, fill, dtype=values.dtype, device=device)
    rows, cols = mask.nonzero(as_tuple=True)
    out[rows, cols] = values[group[rows], slot[rows], position[rows, cols]]
    return out


def trajectory_advantages(advantages: torch.Tensor, layout: GroupLayout) -> torch.Tensor:
    """A^(j) ``[B, G]``: the mean of each trajectory's row advantages ``[rows]`` (0 in padded slots).

    Accumulated in float64 over rows sorted by (trajectory, turn), so the result does not depend on row order and a
    trajectory whose rows share one advantage gets exactly that value back.
    """
    device = advantages.device
    flat = (layout.group * layout.group_size + layout.slot).to(device)
    size = layout.num_groups * layout.group_size
    order = torch.argsort(flat, stable=True)
    sums = torch.zeros(size, dtype=torch.float64, device=device).index_add_(0, flat[order],
                                                                              advantages[order].double())
    counts = torch.bincount(flat, minlength=size).to(torch.float64)
    means = torch.where(counts > 0, sums / counts.clamp_min(1), 0.0)
    return means.to(advantages.dtype).view(layout.num_groups, layout.group_size)
