"""The "bring your own environment" example: a user's module chosen by class_path trains through the real CLI."""

import sys
from pathlib import Path

import pytest

from craft_pl.cli import main
from tests.tb import read_scalars

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture
def examples_on_path(monkeypatch):
    """What ``PYTHONPATH=examples`` does for a user."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    for name in [m for m in sys.modules if m == "guess_number" or m.startswith("guess_number.")]:
        del sys.modules[name]


def _play(env, expert, task):
    """One episode through the agent's interface; returns (won, guesses, the ranges the observations stated)."""
    from guess_number.env import still_possible

    observation = env.reset(task)
    expert.reset(task.instruction)
    guesses, ranges = [], []
    for _ in range(env.max_turns):
        ranges.append(still_possible(observation))
        action, well_formed = env.parse_action(env.format_response(expert.act(observation, env.admissible_actions)))
        assert well_formed
        guesses.append(int(action))
        result = env.step(action)
        observation = result.observation
        if result.done:
            return result.info["won"], guesses, ranges
    return False, guesses, ranges


def test_the_game_states_the_range_and_bisection_beats_the_demonstrator(examples_on_path):
    """The example's promise: the warm start imitates a player who guesses anywhere in the range still possible
    (it wins often, not always); the skill in the privileged context (bisection) wins nearly always."""
    from guess_number import GuessNumberEnv
    from guess_number.env import still_possible

    env = GuessNumberEnv(max_number=16, max_turns=4)
    tasks = env.task_panel("val", 200, 0)
    assert {t.task_type for t in tasks} == set(env.task_types)
    explorer, bisect = env.make_expert(), env.make_privileged_expert()
    explorer_wins = bisect_wins = 0
    for task in tasks:
        won, guesses, ranges = _play(env, explorer, task)
        explorer_wins += won
        assert all(low <= guess <= high for guess, (low, high) in zip(guesses, ranges))
        assert all(low <= task.payload <= high for low, high in ranges)
        won, guesses, ranges = _play(env, bisect, task)
        bisect_wins += won
        assert guesses == [(low + high) // 2 for low, high in ranges]
    assert bisect_wins >= 0.95 * len(tasks)  # 15 of 16 secrets of 1..16 and all of 1..8 in 4 guesses
    assert 0.55 * len(tasks) < explorer_wins < 0.85 * len(tasks)  # about 0.71 in expectation
    assert env.parse_action("<action>3</action>") == (None, False)
    env.reset(tasks[0])
    top = 16 if tasks[0].task_type == "large" else 8
    after_invalid = env.step(None)  # a malformed answer costs a guess but keeps the range in the next observation
    assert not after_invalid.info["valid_action"] and still_possible(after_invalid.observation) == (1, top)


@pytest.mark.slow
def test_one_training_step_through_the_cli(examples_on_path, tmp_path):
    main(["fit", "--config", str(EXAMPLES / "guess_number" / "config.yaml"),
          "--config", str(ROOT / "configs" / "method" / "grpo.yaml"), "--config", str(ROOT / "configs" / "smoke.yaml"),
          "--trainer.max_epochs=1", "--data.val_tasks=4", f"--trainer.default_root_dir={tmp_path / 'run'}",
          f"--model.policy.init_args.warm_start.cache_dir={tmp_path / 'cache'}",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    scalars = read_scalars(tmp_path / "run")
    assert len(scalars["train/loss"]) == 2
    assert {"rollout/success_rate", "val/success_rate"} <= set(scalars)
    assert any(tag.startswith("rollout/success_rate/") for tag in scalars)
