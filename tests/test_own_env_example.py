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


def test_the_game_plays_and_the_expert_wins(examples_on_path):
    from guess_number import GuessNumberEnv

    env = GuessNumberEnv(max_number=16, max_turns=5)
    tasks = env.task_panel("val", 40, 0)
    assert {t.task_type for t in tasks} == set(env.task_types)
    for task in tasks:
        expert, observation = env.make_expert(), env.reset(task)
        expert.reset(task.instruction)
        for _ in range(env.max_turns):
            action, well_formed = env.parse_action(env.format_response(expert.act(observation, env.admissible_actions)))
            result = env.step(action if well_formed else None)
            observation = result.observation
            if result.done:
                break
        assert well_formed and result.info["won"] and result.reward == 10.0
    assert env.parse_action("<action>3</action>") == (None, False)
    assert not env.step(None).info["valid_action"]


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
