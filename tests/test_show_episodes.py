"""``craft_pl.tools.show_episodes``: which episodes it prints (``N``, ``ONLY``), and a bad ``ONLY`` fails before any
model loads."""

import math
from types import SimpleNamespace

import pytest

from craft_pl.tools import show_episodes


def test_only_lost_or_won_keeps_the_order_and_the_count():
    episodes = [SimpleNamespace(name=i, won=i % 3 == 0) for i in range(10)]
    assert [t.name for t in show_episodes.chosen(episodes, "lost", 4)] == [1, 2, 4, 5]
    assert [t.name for t in show_episodes.chosen(episodes, "won", 12)] == [0, 3, 6, 9]
    assert [t.name for t in show_episodes.chosen(episodes, "", 3)] == [0, 1, 2]


def test_a_bad_only_names_the_choices_before_validation_starts(monkeypatch):
    monkeypatch.setenv("ONLY", "failed")
    monkeypatch.setattr(show_episodes, "craft_pl_main", lambda args: pytest.fail("validation ran"))
    with pytest.raises(SystemExit, match="ONLY=lost, ONLY=won"):
        show_episodes.main()


def test_invalid_cascades_count_first_invalid_turns_runs_and_recoveries():
    def episode(*valid):
        return SimpleNamespace(turns=[SimpleNamespace(valid_action=v) for v in valid])

    # invalid first turn, then a run of two, a recovery; a second episode starts afresh (its first turn is "first")
    counts = show_episodes.invalid_cascades([episode(False, True, False, False, True), episode(False, False)])
    assert counts == {"turns": 7, "invalid_after_valid": 3, "invalid_after_invalid": 2, "after_invalid": 4,
                      "recovered": 0.5}
    assert math.isnan(show_episodes.invalid_cascades([episode(True, True)])["recovered"])  # nothing to recover from
