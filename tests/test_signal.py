"""Collapse diagnostics on hand-built groups, and dynamic sampling (DAPO) on a scripted rollout: which groups it
keeps, when it stops, what it logs, and that without it nothing changes."""

import itertools

import pytest
import torch

from craft_pl.batch import PromptParts, Task, Trajectory, TurnRecord
from craft_pl.loss import LossRecipe
from craft_pl.objective import Objective
from craft_pl.rollout.engine import Generation, GenerationEngine, SamplingParams
from craft_pl.rollout.experience import ExperienceMaker, Refill, informative_first
from craft_pl.rollout.signal import signal_stats
from tests.toy_env import PickWordEnv


def _episode(group, index, reward, won, first_response=(1, 2)):
    trajectory = Trajectory(task=Task(f"t{group}", "even", "choose x"), group_id=group, trajectory_id=index)
    trajectory.episode_reward, trajectory.won = reward, won
    trajectory.turns = [TurnRecord(PromptParts(""), [0], list(first_response), [0.0], True, 0)]
    return trajectory


def test_signal_stats_by_hand():
    episodes = [_episode(0, 0, 10.0, True), _episode(0, 1, 10.0, True, (3,)),      # all won: no spread
                _episode(1, 2, 0.0, False), _episode(1, 3, 10.0, True, (3,)),      # spread, std 7.0711
                _episode(2, 4, 0.0, False), _episode(2, 5, 0.0, False)]            # none won, same response
    stats = signal_stats(episodes)
    assert stats["rollout/zero_std_groups"] == pytest.approx(2 / 3)
    assert stats["rollout/solve_all"] == pytest.approx(1 / 3)
    assert stats["rollout/solve_none"] == pytest.approx(1 / 3)
    assert stats["rollout/reward_std"] == pytest.approx((200 ** 0.5 / 2) / 3)  # stdev(0, 10) = 7.07, others 0
    assert stats["rollout/distinct_responses"] == pytest.approx((1.0 + 1.0 + 0.5) / 3)
    assert signal_stats([]) == {}


def test_informative_groups_come_first_renumbered_and_the_draw_is_untouched():
    drawn = [_episode(0, 0, 0.0, False), _episode(0, 1, 0.0, False),
             _episode(1, 2, 0.0, False), _episode(1, 3, 10.0, True),
             _episode(2, 4, 10.0, True), _episode(2, 5, 0.0, False)]
    kept = informative_first(drawn, 2, 2)
    assert [(t.task.task_id, t.group_id, t.trajectory_id) for t in kept] == [("t1", 0, 0), ("t1", 0, 1),
                                                                            ("t2", 1, 2), ("t2", 1, 3)]
    assert [(t.group_id, t.trajectory_id) for t in drawn] == [(0, 0), (0, 1), (1, 2), (1, 3), (2, 4), (2, 5)]
    topped_up = informative_first(drawn, 3, 2)  # not enough informative groups: the first other one fills up
    assert [t.task.task_id for t in topped_up][4:] == ["t0", "t0"]


class AlternatingEngine(GenerationEngine):
    """Answers 'apple', 'brick', 'apple', ... across the prompts of every call (siblings disagree)."""

    def generate(self, model, tokenizer, prompt_ids, sampling, generator, stop_strings=()):
        words = itertools.cycle(["apple", "brick"])
        responses = [tokenizer.encode(f"<think>x</think><action>{next(words)}</action>", add_special_tokens=False)
                     for _ in prompt_ids]
        return [Generation(ids, [0.0] * len(ids), True) for ids in responses]


def _tasks(*words):
    return [Task(f"pick/{word}", "even", f"choose {word}", payload=word) for word in words]


def _make(tiny_policy, tasks, refill=None):
    maker = ExperienceMaker(lambda: PickWordEnv(max_turns=1), 1, AlternatingEngine(), 8)
    recipe = LossRecipe(Objective(distill_coef=0.0, kl_coef=0.0), [])
    return maker.make(tiny_policy, tasks, 2, SamplingParams(1.0, 1.0, 32), torch.Generator().manual_seed(0),
                      recipe, PickWordEnv(max_turns=1), refill=refill)


def test_dynamic_sampling_refills_until_every_group_is_informative(tiny_policy):
    more = iter([_tasks("brick", "delta"), _tasks("ember", "frost")])
    experience = _make(tiny_policy, _tasks("apple", "cloud"), Refill(lambda: next(more), max_gen_batches=4))
    # apple: one sibling wins (spread); cloud: nobody wins; refill: brick (spread), delta (none): 2 informative
    assert experience.stats["rollout/gen_batches"] == 2.0
    assert [t.task.payload for t in experience.trajectories] == ["apple", "apple", "brick", "brick"]
    assert experience.batch.group_ids.tolist() == [0, 0, 1, 1] and experience.batch.num_rows == 4
    assert experience.stats["rollout/zero_std_groups"] == 0.5  # over all 4 drawn groups, before filtering
    assert experience.stats["rollout/solve_none"] == 0.5
    assert torch.equal(experience.batch.advantages.abs() > 0, torch.ones(4, dtype=torch.bool))


def test_dynamic_sampling_at_its_cap_trains_on_what_it_drew(tiny_policy):
    more = iter([_tasks("delta", "ember")])
    experience = _make(tiny_policy, _tasks("apple", "cloud"), Refill(lambda: next(more), max_gen_batches=2))
    assert experience.stats["rollout/gen_batches"] == 2.0  # the cap: no error, informative first, topped up
    assert [t.task.payload for t in experience.trajectories] == ["apple", "apple", "cloud", "cloud"]
    assert experience.stats["rollout/zero_std_groups"] == 0.75


def test_without_dynamic_sampling_the_step_is_what_it_was(tiny_policy):
    plain = _make(tiny_policy, _tasks("apple", "cloud"))
    assert "rollout/gen_batches" not in plain.stats
    assert [t.task.payload for t in plain.trajectories] == ["apple", "apple", "cloud", "cloud"]
    assert plain.stats["rollout/zero_std_groups"] == 0.5


def test_dynamic_sampling_is_one_process_only(monkeypatch):
    import craft_pl.datamodule as datamodule

    data = datamodule.RolloutDataModule(env=lambda: PickWordEnv(), dynamic_sampling=True)
    monkeypatch.setattr(datamodule, "world", lambda: (0, 2))
    with pytest.raises(ValueError, match="data.dynamic_sampling works in one process only"):
        data.setup("fit")


def test_a_run_with_dynamic_sampling_logs_its_refills_and_resumes_to_the_bit(tmp_path):
    from craft_pl.cli import main
    from tests.tb import read_scalars
    from tests.test_training_toy import TOY_ARGS

    def fit(name, epochs, extra=()):
        root = tmp_path / name
        main(["fit", *TOY_ARGS, f"--trainer.default_root_dir={root}", f"--trainer.max_epochs={epochs}",
              f"--model.policy.warm_start.cache_dir={tmp_path / 'cache'}", "--data.dynamic_sampling=true",
              "--data.max_gen_batches=3", "--data.val_tasks=1", "--trainer.check_val_every_n_epoch=100", *extra])
        return read_scalars(root), root

    whole, _ = fit("whole", 2)
    assert [value for _, value in whole["rollout/gen_batches"]] and \
        all(1 <= value <= 3 for _, value in whole["rollout/gen_batches"])
    assert len(whole["rollout/zero_std_groups"]) == 2
    half, half_root = fit("half", 1)
    (checkpoint,) = [p for p in half_root.rglob("*.ckpt") if p.name != "interrupted.ckpt"]
    resumed, _ = fit("resumed", 2, [f"--ckpt_path={checkpoint}"])
    for tag in ("train/loss", "rollout/gen_batches", "rollout/zero_std_groups"):
        assert [v for _, v in half[tag] + resumed[tag]] == [v for _, v in whole[tag]], tag


class GreedyAppleEngine(AlternatingEngine):
    """Greedy decoding always answers 'apple'; sampling alternates 'apple' and 'brick'."""

    def generate(self, model, tokenizer, prompt_ids, sampling, generator, stop_strings=()):
        if sampling.temperature == 0.0:
            ids = tokenizer.encode("<think>x</think><action>apple</action>", add_special_tokens=False)
            return [Generation(ids, [0.0] * len(ids), True) for _ in prompt_ids]
        return super().generate(model, tokenizer, prompt_ids, sampling, generator, stop_strings)


def test_the_warm_start_signal_is_greedy_success_and_pass_at_g(tiny_policy):
    from craft_pl.datamodule import RolloutDataModule

    data = RolloutDataModule(env=lambda: PickWordEnv(max_turns=1), group_size=4, val_tasks=24,
                             engine=GreedyAppleEngine(), val_batch_envs=8)
    data.connect(tiny_policy, LossRecipe(Objective(distill_coef=0.0), []))
    data.setup("fit")
    words = [task.payload for task in data.panel("val")]
    assert "apple" in words and "brick" in words and set(words) - {"apple", "brick"}
    signal = data.data_facts().signal_at_start()
    assert signal["val/success_rate_greedy"] == words.count("apple") / len(words)
    assert signal["val/pass_at_g"] == (words.count("apple") + words.count("brick")) / len(words)
    assert RolloutDataModule(env=lambda: PickWordEnv(), val_signal=False).data_facts().signal_at_start is None


def test_a_rollout_step_writes_no_bar_into_a_log_file(tiny_policy, capsys):
    """With a progress bar configured and stderr not a terminal (a log file), the rollout bar stays silent."""
    from types import SimpleNamespace

    from craft_pl.datamodule import RolloutDataModule

    data = RolloutDataModule(env=lambda: PickWordEnv(max_turns=2), tasks_per_step=2, group_size=2, val_tasks=2,
                             engine=AlternatingEngine(), val_signal=False)
    data.connect(tiny_policy, LossRecipe(Objective(distill_coef=0.0), []))
    data.trainer = SimpleNamespace(current_epoch=0, progress_bar_callback=object())
    data.setup("fit")
    capsys.readouterr()
    assert data.rl_step() and "\r" not in capsys.readouterr().err
