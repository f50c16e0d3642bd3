"""Print the first validation episodes of a policy, prompt by prompt: what the agent saw and what it answered.

Usage:
    N=6 [ONLY=lost|won] python -m craft_pl.tools.show_episodes --config configs/alfworld.yaml [validate arguments]

Runs ``python -m craft_pl validate`` with those arguments (the warm start comes from the cache when it is there) and
prints, for the first ``N`` (default 12) plain validation episodes (only the lost or only the won ones with
``ONLY``), each turn's prompt (its last 400 characters) and the response; then one line on the whole plain panel's
invalid actions: how many followed a valid turn, how many an invalid one (a cascade), and how often the turn after
an invalid one was valid again. It is how ``benchmarks/results/alfworld_warm_start_diagnosis.md`` and
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


def invalid_cascades(episodes: list) -> dict[str, float]:
    """Over every turn of ``episodes``: invalid turns after a valid turn (or first), invalid turns after an invalid
    one, and the share of turns following an invalid one that are valid (``recovered``; NaN without any)."""
    counts = {"turns": 0, "invalid_after_valid": 0, "invalid_after_invalid": 0, "after_invalid": 0, "recovered": 0}
    for trajectory in episodes:
        previous_valid = True
        for turn in trajectory.turns:
            counts["turns"] += 1
            if not previous_valid:
                counts["after_invalid"] += 1
                counts["recovered"] += turn.valid_action
            if not turn.valid_action:
                counts["invalid_after_valid" if previous_valid else "invalid_after_invalid"] += 1
            previous_valid = turn.valid_action
    recovered = counts["recovered"] / counts["after_invalid"] if counts["after_invalid"] else float("nan")
    return {**{k: v for k, v in counts.items() if k != "recovered"}, "recovered": recovered}


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
    plain = [t for t in seen if not t.privileged_context]  # the hinted diagnostic panel's episodes are recorded too
    for trajectory in chosen(plain, only, int(os.environ.get("N", 12))):
        print("=" * 80, trajectory.task.task_type, "won" if trajectory.won else "lost", trajectory.task.instruction)
        for turn in trajectory.turns:
            print("--- prompt:", turn.prompt_parts.render()[-400:])
            print("--- response:", tokenizer.decode(turn.response_ids))
    cascades = invalid_cascades(plain)
    print(f"invalid actions over the plain panel's {cascades['turns']} turns: {cascades['invalid_after_valid']} after a "
          f"valid turn, {cascades['invalid_after_invalid']} after an invalid one; the turn after an invalid one was "
          f"valid {cascades['recovered']:.0%} of the time")


if __name__ == "__main__":
    main()
