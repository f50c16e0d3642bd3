"""Episode statistics shared by training rollouts and evaluation."""

from __future__ import annotations

from collections import defaultdict

from craft_pl.rollout.collector import Trajectory


def episode_stats(trajectories: list[Trajectory], prefix: str) -> dict[str, float]:
    """Success rate (overall and per task type), score, valid-action ratio, turns and environment errors."""
    if not trajectories:
        return {}
    count = len(trajectories)
    turns = [len(t.turns) for t in trajectories]
    rows = sum(turns)
    stats = {
        f"{prefix}/success_rate": sum(t.won for t in trajectories) / count,
        f"{prefix}/score": sum(t.score for t in trajectories) / count,
        f"{prefix}/valid_action_ratio": sum(r.valid_action for t in trajectories for r in t.turns) / max(1, rows),
        f"{prefix}/turns": sum(turns) / count,
        f"{prefix}/env_errors": float(sum(t.env_error for t in trajectories)),
    }
    by_type: dict[str, list[bool]] = defaultdict(list)
    for trajectory in trajectories:
        by_type[trajectory.task.task_type].append(trajectory.won)
    for task_type, wins in sorted(by_type.items()):
        stats[f"{prefix}/success_rate/{task_type}"] = sum(wins) / len(wins)
    return stats
