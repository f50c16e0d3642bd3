"""Print the first validation episodes of a policy, prompt by prompt: what the agent saw and what it answered.

Usage:
    N=6 [ONLY=lost|won] python -m craft_pl.tools.show_episodes --config configs/alfworld.yaml [validate arguments]

Runs ``python -m craft_pl validate`` with those arguments (the warm start comes from the cache when it is there) and
prints, for the first ``N`` (default 12) plain validation episodes (only the lost or only the won ones with
``ONLY``), each turn's prompt (its last 400 characters) and the response. It is how ``benchmarks/results/alfworld_warm_start_diagnosis.md`` and
``benchmarks/results/search_qa_diagnosis.md`` looked inside their episodes.
"""

from __future__ import annotations

import os
import sys

import craft_pl.evaluation as evaluation
from craft_pl.cli import main as craft_pl_main


def check_only(only: str) -> None:
    if only not in ("", "lost", "won"):
        raise SystemExit(f"ONLY={only!r}: use ONLY=lost, ONLY=won, or leave it unset for every episode")


def chosen(episodes: list, only: str, count: int) -> list:
    """The first ``count`` of ``episodes``, only the lost or only the won ones when ``only`` says so."""
    check_only(only)
    return [t for t in episodes if not only or t.won == (only == "won")][:count]


def main() -> None:
    only = os.environ.get("ONLY", "")
    check_only(only)  # before any model loads
    seen = []
    update = evaluation.EpisodeMetrics.update

    def recording_update(self, trajectories, *args, **kwargs):
        if self.prefix == "val":
            seen.extend(trajectories)
        return update(self, trajectories, *args, **kwargs)

    evaluation.EpisodeMetrics.update = recording_update
    cli = craft_pl_main(["validate", *sys.argv[1:]])
    tokenizer = cli.model.policy.tokenizer
    for trajectory in chosen(seen, only, int(os.environ.get("N", 12))):
        print("=" * 80, trajectory.task.task_type, "won" if trajectory.won else "lost", trajectory.task.instruction)
        for turn in trajectory.turns:
            print("--- prompt:", turn.prompt_parts.render()[-400:])
            print("--- response:", tokenizer.decode(turn.response_ids))


if __name__ == "__main__":
    main()
