"""Print the first validation episodes of a policy, prompt by prompt: what the agent saw and what it answered.

Usage:
    N=6 python benchmarks/show_episodes.py --config configs/alfworld.yaml [any other validate arguments]

Runs ``python -m craft_pl validate`` with those arguments (the warm start comes from the cache when it is there) and
prints, for the first ``N`` (default 12) plain validation episodes, each turn's prompt (its last 400 characters) and
the response. It is how `results/alfworld_warm_start_diagnosis.md` and `results/search_qa_diagnosis.md` looked
inside their episodes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import craft_pl.evaluation as evaluation  # noqa: E402
from craft_pl.cli import main as craft_pl_main  # noqa: E402


def main() -> None:
    seen = []
    update = evaluation.EpisodeMetrics.update

    def recording_update(self, trajectories, *args, **kwargs):
        if self.prefix == "val":
            seen.extend(trajectories)
        return update(self, trajectories, *args, **kwargs)

    evaluation.EpisodeMetrics.update = recording_update
    cli = craft_pl_main(["validate", *sys.argv[1:]])
    tokenizer = cli.model.policy.tokenizer
    for trajectory in seen[: int(os.environ.get("N", 12))]:
        print("=" * 80, trajectory.task.task_type, "won" if trajectory.won else "lost", trajectory.task.instruction)
        for turn in trajectory.turns:
            print("--- prompt:", turn.prompt_parts.render()[-400:])
            print("--- response:", tokenizer.decode(turn.response_ids))


if __name__ == "__main__":
    main()
