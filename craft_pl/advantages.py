"""Advantage estimators: GRPO as verl-agent runs it (docs/methods.md#grpo) and GiGPO (docs/methods.md#gigpo).

Each estimator is a class chosen by ``class_path`` (``model.objective.init_args.advantage``): ``estimate(batch)``
returns the advantage of every row and the estimator's own diagnostics. Adding an estimator is one class here (or in
a file of its own) and one config key.

GiGPO (Feng et al., arXiv 2505.10978) adds a *same-state* term to GRPO's episode-relative advantage:

    A(row) = A^E(row) + ω · A^S(row)
    A^E    = (R_row - mean_g) / F_norm                 over all rows of the row's group g (GRPO, cross-steps)
    A^S    = (R^step_row - mean_s) / F_norm            over the rows of the row's step group s
    F_norm = std + eps ("mean_std_norm") or 1 ("mean_norm"); std is unbiased

A step group is the set of rows of one group that share an anchor state. verl-agent (``build_step_group``) groups
the rows of a group whose anchor observation is identical, whatever the turn (``step_grouping: state``, the
default, from ``state_ids``); ``state_and_turn`` also requires the same turn (``anchor_ids``). A step group of one
row (no same-state sibling) gets A^S = 0, and so does a step group whose returns are all equal (exactly, not up to
rounding). Everything here is deterministic and gradient-free.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from craft_pl.batch import RolloutBatch

GigpoNorm = Literal["mean_std_norm", "mean_norm"]
GIGPO_NORMS = ("mean_std_norm", "mean_norm")


def grpo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float, norm_by_std: bool) -> torch.Tensor:
    """A_row = (R_row - mean_g) / (std_g + eps) over all rows of the row's group.

    rewards, group_ids: ``[rows]``. std is unbiased (as ``torch.std``); a singleton group has mean 0, std 1.
    Group statistics are accumulated in float64, so a group whose rewards are all equal gets advantages of exactly
    0 (float32 means of equal values can be off by an ulp, which ``/ (0 + eps)`` would blow up). Returns ``[rows]``.
    """
    advantages = torch.empty_like(rewards)
    for group in torch.unique(group_ids):
        members = group_ids == group
        scores = rewards[members].double()
        if scores.numel() == 1:
            mean, std = torch.zeros((), dtype=scores.dtype), torch.ones((), dtype=scores.dtype)
        else:
            mean, std = scores.mean(), scores.std()
        centred = scores - mean
        advantages[members] = (centred / (std + eps) if norm_by_std else centred).to(rewards.dtype)
    return advantages


def discounted_step_returns(rewards: torch.Tensor, valid_action: torch.Tensor, group_ids: torch.Tensor,
                            trajectory_ids: torch.Tensor, turn_index: torch.Tensor, gamma: float) -> torch.Tensor:
    """GiGPO's step return R^step_t = Σ_k γ^k r_{t+k} - penalty_t of every row, from what the batch stores.

    All inputs are ``[rows]``; returns ``[rows]`` in ``rewards``' dtype. A row's ``rewards`` is the episode reward
    minus the invalid-action penalty of its own turn (verl-agent). The environments give their reward only at the
    trajectory's last step (e.g. 10 · won), so the discounted return-to-go of turn t is γ^(K - t) · R_episode with K
    the trajectory's last turn index; verl-agent then subtracts the invalid-action penalty of the row's own turn,
    undiscounted. Hence

        R^step_t = γ^(K - t) · R_episode - (R_episode - rewards_t)

    R_episode is read from the trajectory's valid rows (their ``rewards`` carry no penalty, so all equal it). A
    trajectory with no valid row at all has no penalty-free row: its largest row reward (R_episode - penalty) is
    used, which discounts that one penalty too (an error of at most (1 - γ^(K - t)) · penalty on such rows).
    A trajectory is ``(group_id, trajectory_id)``; distances count turn indices.
    """
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    keys = torch.stack([group_ids.long(), trajectory_ids.long()], dim=1)
    _, trajectory = torch.unique(keys, dim=0, return_inverse=True)
    count = int(trajectory.max()) + 1 if trajectory.numel() else 0
    values = rewards.double()
    turns = turn_index.long()
    last_turn = torch.full((count,), -1, dtype=torch.long, device=turns.device)
    last_turn = last_turn.scatter_reduce(0, trajectory, turns, reduce="amax")
    valid = valid_action.to(torch.bool)
    lowest = torch.full((count,), float("-inf"), dtype=torch.float64, device=values.device)
    best_valid = lowest.scatter_reduce(0, trajectory, torch.where(valid, values, float("-inf")), reduce="amax")
    best_any = lowest.scatter_reduce(0, trajectory, values, reduce="amax")
    episode = torch.where(torch.isfinite(best_valid), best_valid, best_any)[trajectory]
    distance = (last_turn[trajectory] - turns).double()
    returns = torch.pow(torch.tensor(float(gamma), dtype=torch.float64), distance) * episode - (episode - values)
    return returns.to(rewards.dtype)


def step_group_advantages(step_returns: torch.Tensor, group_ids: torch.Tensor, step_group_ids: torch.Tensor,
                          eps: float, norm: GigpoNorm) -> torch.Tensor:
    """A^S of every row: its step return centred (and divided by std + eps) within its step group.

    step_returns, group_ids, step_group_ids: ``[rows]``; a step group is a distinct ``(group_id, step_group_id)``
    pair (``state_ids`` or ``anchor_ids``, see ``GiGPOAdvantage.step_grouping``).
    Statistics are taken in float64 on the CPU (deterministic); singleton step groups and step groups whose returns
    are all equal get exactly 0. Returns ``[rows]`` in ``step_returns``' dtype and device.
    """
    if norm not in GIGPO_NORMS:
        raise ValueError(f"norm must be one of {GIGPO_NORMS}, got {norm!r}")
    keys = torch.stack([group_ids.long(), step_group_ids.long()], dim=1).cpu()
    _, step_group = torch.unique(keys, dim=0, return_inverse=True)
    count = int(step_group.max()) + 1 if step_group.numel() else 0
    values = step_returns.detach().double().cpu()
    sizes = torch.bincount(step_group, minlength=count).double()
    mean = torch.zeros(count, dtype=torch.float64).index_add_(0, step_group, values) / sizes.clamp_min(1)
    centred = values - mean[step_group]
    square_sum = torch.zeros(count, dtype=torch.float64).index_add_(0, step_group, centred.square())
    std = (square_sum / (sizes - 1).clamp_min(1)).sqrt()
    highest = torch.full((count,), float("-inf"), dtype=torch.float64).scatter_reduce(0, step_group, values, "amax")
    lowest = torch.full((count,), float("inf"), dtype=torch.float64).scatter_reduce(0, step_group, values, "amin")
    informative = (sizes > 1) & (highest > lowest)
    scaled = centred / (std[step_group] + eps) if norm == "mean_std_norm" else centred
    advantages = torch.where(informative[step_group], scaled, torch.zeros((), dtype=torch.float64))
    return advantages.to(dtype=step_returns.dtype, device=step_returns.device)


def gigpo_advantages(rewards: torch.Tensor, step_returns: torch.Tensor, group_ids: torch.Tensor,
                     step_group_ids: torch.Tensor, omega: float = 1.0, norm: GigpoNorm = "mean_std_norm",
                     eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """GiGPO's advantage A = A^E + ω · A^S of every row (docs/methods.md#gigpo).

    Args:
        rewards: ``[rows]`` row rewards (episode reward minus the turn's invalid-action penalty).
        step_returns: ``[rows]`` discounted step returns (:func:`discounted_step_returns`).
        group_ids: ``[rows]`` task group of each row.
        step_group_ids: ``[rows]`` anchor state of each row (rows sharing it, within a group, form a step group).
        omega: weight ω of the step term.
        norm: "mean_std_norm" divides both terms by their std + eps; "mean_norm" only centres them.
        eps: added to the std.

    The episode term is :func:`grpo_advantages` with ``norm_by_std = (norm == "mean_std_norm")``, bit for bit.
    Returns ``(advantages [rows], step_term [rows])`` in ``rewards``' dtype (``step_term`` is A^S before ω).
    """
    if norm not in GIGPO_NORMS:
        raise ValueError(f"norm must be one of {GIGPO_NORMS}, got {norm!r}")
    episode = grpo_advantages(rewards, group_ids, eps, norm == "mean_std_norm")
    step = step_group_advantages(step_returns, group_ids, step_group_ids, eps, norm).to(rewards.dtype)
    return episode + omega * step, step


# ---------------------------------------------------------------------------------------------------- estimators
class AdvantageEstimator:
    """Base class: ``estimate(batch) -> (advantages [rows], diagnostics)``, once per RL step, gradient-free."""

    def estimate(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError(f"{type(self).__name__} must implement estimate(batch)")


class GRPOAdvantage(AdvantageEstimator):
    """GRPO's episode-relative advantage as verl-agent runs it: (R - mean_g) / (std_g + eps) over the row's group."""

    def __init__(self, eps: float = 1e-6, norm_by_std: bool = True) -> None:
        """
        Args:
            eps: Added to the group std before dividing.
            norm_by_std: Divide by the group std (GRPO); False gives Dr.GRPO's mean-centring.
        """
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
            raise ValueError(f"model.objective.init_args.advantage.init_args.eps must be a finite number >= 0, "
                             f"got {eps!r}")
        self.eps = eps
        self.norm_by_std = norm_by_std

    def estimate(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return grpo_advantages(batch.rewards, batch.group_ids, self.eps, self.norm_by_std), {}


StepGrouping = Literal["state", "state_and_turn"]


class GiGPOAdvantage(AdvantageEstimator):
    """GiGPO (docs/methods.md#gigpo): GRPO's episode term + omega x a step term over the rows in the same anchor state.

    Diagnostics: ``train/step_advantage_mean`` (0 by construction) and ``train/step_advantage_abs_mean`` (its size).
    """

    def __init__(self, omega: float = 1.0, gamma: float = 0.95, norm: GigpoNorm = "mean_std_norm", eps: float = 1e-6,
                 step_grouping: StepGrouping = "state") -> None:
        """
        Args:
            omega: Weight of the step term (verl-agent's step_advantage_w).
            gamma: Discount of the step returns over a trajectory's turns (verl-agent's GiGPO scripts: 0.95).
            norm: F_norm of both terms: std + eps ("mean_std_norm") or 1 ("mean_norm").
            eps: Added to the std before dividing.
            step_grouping: "state": rows of a group with the same anchor observation, whatever the turn (verl-agent);
                "state_and_turn": also at the same turn.
        """
        prefix = "model.objective.init_args.advantage.init_args"
        if not (isinstance(omega, (int, float)) and math.isfinite(omega) and omega >= 0):
            raise ValueError(f"{prefix}.omega must be a finite number >= 0 (verl-agent: 1.0), got {omega!r}")
        if not (isinstance(gamma, (int, float)) and 0 < gamma <= 1):
            raise ValueError(f"{prefix}.gamma must be in (0, 1] (verl-agent: 0.95), got {gamma!r}")
        if norm not in GIGPO_NORMS:
            raise ValueError(f"{prefix}.norm must be one of {GIGPO_NORMS}, got {norm!r}")
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
            raise ValueError(f"{prefix}.eps must be a finite number >= 0, got {eps!r}")
        if step_grouping not in ("state", "state_and_turn"):
            raise ValueError(f"{prefix}.step_grouping must be 'state' (verl-agent) or 'state_and_turn', "
                             f"got {step_grouping!r}")
        self.omega = float(omega)
        self.gamma = float(gamma)
        self.norm = norm
        self.eps = eps
        self.step_grouping = step_grouping

    def step_groups(self, batch: RolloutBatch) -> torch.Tensor:
        """``[rows]`` ids whose equal values (within a group) form the step groups."""
        if self.step_grouping == "state_and_turn":
            return batch.anchor_ids
        if batch.state_ids is None:
            raise ValueError("GiGPOAdvantage(step_grouping='state') needs batch.state_ids (the anchor state of each "
                             "row, whatever the turn); build the batch with craft_pl.rollout.experience, or use "
                             "step_grouping: state_and_turn")
        return batch.state_ids

    def estimate(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        step_returns = discounted_step_returns(batch.rewards, batch.valid_action, batch.group_ids,
                                               batch.trajectory_ids, batch.turn_index, self.gamma)
        advantages, step = gigpo_advantages(batch.rewards, step_returns, batch.group_ids, self.step_groups(batch),
                                            self.omega, self.norm, self.eps)
        return advantages, {"train/step_advantage_mean": float(step.mean()),
                            "train/step_advantage_abs_mean": float(step.abs().mean())}
