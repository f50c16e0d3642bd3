"""How much learning signal a step's groups carry: the collapse diagnostics the field uses (DAPO, verl).

A group whose G episode rewards are all equal gives GRPO no gradient (every advantage is exactly 0): the share of
such groups is ``rollout/zero_std_groups``. Computed on every drawn group, before any filtering (dynamic sampling
drops exactly these groups, so measuring after it would hide the collapse it works around).

- ``rollout/zero_std_groups``: share of groups whose episode rewards are all equal;
- ``rollout/solve_all`` / ``rollout/solve_none``: share of groups where every / no episode was won;
- ``rollout/reward_std``: mean over groups of the in-group (unbiased) std of the episode rewards;
- ``rollout/distinct_responses``: mean over groups of (distinct first-turn responses) / G.
"""

from __future__ import annotations

import statistics

from craft_pl.batch import Trajectory


def groups_of(trajectories: list[Trajectory]) -> dict[int, list[Trajectory]]:
    """The trajectories of each group, by group id, in their order."""
    groups: dict[int, list[Trajectory]] = {}
    for trajectory in trajectories:
        groups.setdefault(trajectory.group_id, []).append(trajectory)
    return groups


def has_reward_spread(group: list[Trajectory]) -> bool:
    """Whether the group's episode rewards differ (exactly; a group of one never does)."""
    return len({trajectory.episode_reward for trajectory in group}) > 1


def signal_stats(trajectories: list[Trajectory]) -> dict[str, float]:
    """The collapse diagnostics of these episodes' groups (see the module docstring); {} without episodes."""
    groups = list(groups_of(trajectories).values())
    if not groups:
        return {}
    count = len(groups)
    stds = [statistics.stdev([t.episode_reward for t in group]) if len(group) > 1 else 0.0 for group in groups]
    distinct = []
    for group in groups:
        first = {tuple(t.turns[0].response_ids) for t in group if t.turns}
        distinct.append(len(first) / len(group))
    return {
        "rollout/zero_std_groups": sum(not has_reward_spread(group) for group in groups) / count,
        "rollout/solve_all": sum(all(t.won for t in group) for group in groups) / count,
        "rollout/solve_none": sum(not any(t.won for t in group) for group in groups) / count,
        "rollout/reward_std": sum(stds) / count,
        "rollout/distinct_responses": sum(distinct) / count,
    }
