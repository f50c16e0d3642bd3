"""Per-state layout for Pillar 1 (``grouping="anchor"``): siblings are the rows that stood in the same state.

With ``grouping="group"`` (the default) CTI compares a token with the tokens of every sibling trajectory at the same
aligned position, wherever those siblings are; past the first turn they are in other states, and Ā converges to a
value marginal over states (docs/methods.md#what-the-estimator-measures). With ``grouping="anchor"`` the leave-one-out set of the token at
position ℓ of row (trajectory i, turn k) is

    J^{-i}_{k,ℓ} = { rows j ≠ i of the same group, at the same turn k, with the same anchor_id,
                     that have a response token at position ℓ }          (turn-aligned: ``turn_token`` / ``turn``)

so Ā estimates "draw this state's action from the teacher, continue on-policy" for the state the trajectory is in.
Everything else (weights, baselines, ESS, n_min / ess_min validity, tie -> exactly 0, dead-zone) is the estimator of
``cti_estimator.py`` unchanged: this module only builds a layout in which each *state group* (group, turn, anchor)
plays the role of a group, and each of its rows is one "trajectory" with the turn's response as its positions. So
``n_min`` counts same-state siblings (others than the row itself), a tie means every same-state sibling has the
row's advantage, and the dead-zone scale is the state group's max |A|. Tokens without enough same-state siblings are
not valid and fall back to the plain gate, as elsewhere in the pillar.
"""

from __future__ import annotations

from typing import Literal

import torch

from craft_pl.pillars.cti_estimator import (
    GroupLayout,
    group_layout,
    rows_to_groups,
    trajectory_advantages,
)

Grouping = Literal["group", "anchor"]
GROUPINGS = ("group", "anchor")
STATE_ALIGNS = ("turn_token", "turn")


def state_groups(group_ids: torch.Tensor, turn_index: torch.Tensor, anchor_ids: torch.Tensor) -> torch.Tensor:
    """``[rows]`` long: the state group of each row, equal exactly where (group_id, turn_index, anchor_id) are equal.

    Numbered by sorted key (independent of row order).
    """
    keys = torch.stack([group_ids.long(), turn_index.long(), anchor_ids.long()], dim=1)
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)
    return inverse


def state_layout(group_ids: torch.Tensor, trajectory_ids: torch.Tensor, turn_index: torch.Tensor,
                 anchor_ids: torch.Tensor, response_mask: torch.Tensor, align: str) -> GroupLayout:
    """The ``[S, G', T']`` layout whose groups are state groups (S of them, at most G' rows each).

    Each row of a state group belongs to a different trajectory (one row per trajectory and turn), so the row is
    placed as that trajectory's slot with turn 0: ``turn_token`` gives position ℓ (the token's rank in the turn's
    response), ``turn`` gives one position per row. ids ``[rows]``, response_mask ``[rows, tokens]``.
    """
    if align not in STATE_ALIGNS:
        raise ValueError(f"per-state CTI compares the same turn's responses: align must be one of {STATE_ALIGNS}, "
                         f"got {align!r}")
    device = response_mask.device
    states = state_groups(group_ids, turn_index, anchor_ids).to(device)
    first_turn = torch.zeros_like(states)
    return group_layout(states, trajectory_ids.to(device), first_turn, response_mask, align)


def state_advantages(row_advantages: torch.Tensor, group_ids: torch.Tensor, trajectory_ids: torch.Tensor,
                     turn_index: torch.Tensor, response_mask: torch.Tensor, layout: GroupLayout,
                     advantage: Literal["trajectory", "row"]) -> torch.Tensor:
    """A^(j) of every row placed in the state layout ``[S, G', T']``.

    ``trajectory``: the mean of the trajectory's row advantages (computed on the trajectory layout, exactly as the
    ``group`` grouping does), given to each of its rows; ``row``: each row's own advantage. row_advantages ``[rows]``.
    """
    if advantage == "row":
        return rows_to_groups(row_advantages, layout)
    trajectories = group_layout(group_ids, trajectory_ids, turn_index, response_mask, "turn")
    per_trajectory = trajectory_advantages(row_advantages, trajectories)                      # [B, G]
    device = per_trajectory.device
    own = per_trajectory[trajectories.group.to(device), trajectories.slot.to(device)]          # [rows]
    return rows_to_groups(own, layout)


def anchor_coverage(mask: torch.Tensor, n_siblings: torch.Tensor) -> float:
    """Share of response tokens (``mask`` ``[rows, tokens]``) with at least one same-state sibling at their position."""
    tokens = int(mask.sum())
    return int((mask & (n_siblings > 0)).sum()) / tokens if tokens else 0.0
