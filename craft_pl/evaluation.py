"""Evaluation metrics as a ``torchmetrics.Metric``: sums of episode outcomes, reduced across processes by summing.

Keys (with ``prefix`` = ``val`` or ``test``): ``success_rate``, ``score`` (WebShop's attribute score; other
environments report their own score in [0, 1]), ``valid_action_ratio`` (over turns), ``turns`` (mean per episode),
``env_errors`` (count), and ``success_rate/<task type>`` and ``episodes/<task type>`` (count) for every type with at
least one episode.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from craft_pl.batch import Trajectory

TOTALS = ("episodes", "wins", "score", "turns", "valid_turns", "env_errors")


class EpisodeMetrics(Metric):
    """Accumulates trajectories; ``compute()`` returns the evaluation's metrics as floats."""

    full_state_update = False

    def __init__(self, task_types: list[str], prefix: str = "val") -> None:
        super().__init__()
        self.task_types = list(task_types)
        self.prefix = prefix
        for name in TOTALS:
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("type_episodes", default=torch.zeros(len(self.task_types), dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("type_wins", default=torch.zeros(len(self.task_types), dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, trajectories: list[Trajectory]) -> None:
        for trajectory in trajectories:
            if trajectory.task.task_type not in self.task_types:
                raise ValueError(f"task type {trajectory.task.task_type!r} of {trajectory.task.task_id!r} is not in "
                                 f"the environment's task_types {self.task_types}; add it there")
            index = self.task_types.index(trajectory.task.task_type)
            self.episodes += 1
            self.wins += float(trajectory.won)
            self.score += float(trajectory.score)
            self.turns += len(trajectory.turns)
            self.valid_turns += sum(turn.valid_action for turn in trajectory.turns)
            self.env_errors += float(trajectory.env_error)
            self.type_episodes[index] += 1
            self.type_wins[index] += float(trajectory.won)

    def compute(self) -> dict[str, float]:
        if self.episodes == 0:
            return {}
        p = self.prefix
        metrics = {
            f"{p}/success_rate": float(self.wins / self.episodes),
            f"{p}/score": float(self.score / self.episodes),
            f"{p}/valid_action_ratio": float(self.valid_turns / self.turns.clamp(min=1)),
            f"{p}/turns": float(self.turns / self.episodes),
            f"{p}/env_errors": float(self.env_errors),
        }
        for index, task_type in enumerate(self.task_types):
            if self.type_episodes[index] > 0:
                metrics[f"{p}/success_rate/{task_type}"] = float(self.type_wins[index] / self.type_episodes[index])
                metrics[f"{p}/episodes/{task_type}"] = float(self.type_episodes[index])
        return metrics


def success_by_hint(trajectories: list[Trajectory], task_types: list[str], hint_is_reliable,
                    prefix: str) -> dict[str, float]:
    """Success rate over the episodes whose task's privileged hint is correct (``"reliable"``) and over the others
    (``"unreliable"``), each only where it has episodes (``hint_is_reliable``: ``AgentEnv.hint_is_reliable``). The
    sums are the metric's, so under DDP each process passes its own episodes and the rates are of the whole panel."""
    rates = {}
    for name, reliable in (("reliable", True), ("unreliable", False)):
        part = EpisodeMetrics(task_types, prefix)
        part.update([t for t in trajectories if hint_is_reliable(t.task) == reliable])
        rate = part.compute().get(f"{prefix}/success_rate")
        if rate is not None:
            rates[name] = rate
    return rates
