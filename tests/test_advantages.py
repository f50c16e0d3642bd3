"""GiGPO's advantage (craft-spec 3.4) against hand-computed values, degenerate cases, and its Objective wiring."""

import math

import pytest
import torch

from craft_pl.advantages import discounted_step_returns, gigpo_advantages, step_group_advantages
from craft_pl.batch import RolloutBatch
from craft_pl.objective import Objective, grpo_advantages


def _std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _normalised(values, eps=1e-6):
    mean = sum(values) / len(values)
    return [(v - mean) / (_std(values) + eps) for v in values]


def _batch(group_ids, trajectory_ids, turn_index, anchor_ids, rewards, valid=None):
    rows = len(group_ids)
    return RolloutBatch(
        prompt_ids=[[1]] * rows, response_ids=[[1]] * rows, response_mask=torch.ones(rows, 1, dtype=torch.bool),
        group_ids=torch.tensor(group_ids), trajectory_ids=torch.tensor(trajectory_ids),
        turn_index=torch.tensor(turn_index), anchor_ids=torch.tensor(anchor_ids),
        rewards=torch.tensor(rewards, dtype=torch.float32),
        valid_action=torch.tensor(valid if valid is not None else [True] * rows),
        sampling_logp=torch.zeros(rows, 1))


def test_identical_anchors_make_the_step_term_the_episode_term():
    rewards = torch.tensor([1.0, 0.0, 0.0])
    groups, anchors = torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)
    advantages, step = gigpo_advantages(rewards, rewards, groups, anchors, omega=1.0)
    expected = _normalised([1.0, 0.0, 0.0])                            # [1.1547, -0.5774, -0.5774]
    assert step.tolist() == pytest.approx(expected, rel=1e-6)
    assert advantages.tolist() == pytest.approx([2 * e for e in expected], rel=1e-6)


def test_all_distinct_anchors_leave_grpo_exactly():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    groups, anchors = torch.zeros(4, dtype=torch.long), torch.arange(4)
    advantages, step = gigpo_advantages(rewards, rewards * 0.5, groups, anchors, omega=1.0)
    assert torch.equal(step, torch.zeros(4))
    assert torch.equal(advantages, grpo_advantages(rewards, groups, 1e-6, True))


def test_mixed_anchors_with_discounted_returns_by_hand():
    # 3 trajectories x 2 turns; turn 0: one state; turn 1: trajectories 0, 1 share a state, 2 is alone.
    group, trajectory, turn = [5] * 6, [0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1]
    anchors, rewards = [7, 8, 7, 8, 7, 9], [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    batch = _batch(group, trajectory, turn, anchors, rewards)
    returns = discounted_step_returns(batch.rewards, batch.valid_action, batch.group_ids, batch.trajectory_ids,
                                      batch.turn_index, gamma=0.5)
    assert returns.tolist() == [0.5, 1.0, 0.0, 0.0, 0.5, 1.0]
    advantages, step = gigpo_advantages(batch.rewards, returns, batch.group_ids, batch.anchor_ids, omega=0.5)
    turn0 = _normalised([0.5, 0.0, 0.5])                               # [0.5774, -1.1547, 0.5774]
    turn1 = _normalised([1.0, 0.0])                                    # [0.7071, -0.7071]; trajectory 2: singleton
    expected_step = [turn0[0], turn1[0], turn0[1], turn1[1], turn0[2], 0.0]
    assert step.tolist() == pytest.approx(expected_step, rel=1e-6, abs=1e-12)
    episode = _normalised(rewards)                                     # cross-steps: all 6 rows of the group
    assert advantages.tolist() == pytest.approx([e + 0.5 * s for e, s in zip(episode, expected_step)], rel=1e-6)
    centred, step_centred = gigpo_advantages(batch.rewards, returns, batch.group_ids, batch.anchor_ids,
                                             omega=1.0, norm="mean_norm")
    assert step_centred.tolist() == pytest.approx([1 / 6, 0.5, -1 / 3, -0.5, 1 / 6, 0.0], rel=1e-6)
    assert centred.tolist() == pytest.approx([r - 2 / 3 + s for r, s in zip(rewards, step_centred.tolist())],
                                             rel=1e-6)


def test_step_returns_subtract_the_turn_penalty_undiscounted():
    # one trajectory of 3 turns, episode reward 10, invalid action at turn 1 (penalty 0.1); rows in shuffled order
    batch = _batch([0, 0, 0], [4, 4, 4], [2, 0, 1], [0, 1, 2], [10.0, 10.0, 9.9], valid=[True, True, False])
    returns = discounted_step_returns(batch.rewards, batch.valid_action, batch.group_ids, batch.trajectory_ids,
                                      batch.turn_index, gamma=0.95)
    assert returns.tolist() == pytest.approx([10.0, 0.95 ** 2 * 10, 0.95 * 10 - 0.1], rel=1e-6)
    # no valid row at all: its largest reward stands in for the episode reward (documented approximation)
    lost = _batch([0, 0], [1, 1], [0, 1], [0, 1], [-0.1, -0.1], valid=[False, False])
    returns = discounted_step_returns(lost.rewards, lost.valid_action, lost.group_ids, lost.trajectory_ids,
                                      lost.turn_index, gamma=0.5)
    assert returns.tolist() == pytest.approx([-0.05, -0.1], rel=1e-6)
    with pytest.raises(ValueError, match="gamma"):
        discounted_step_returns(lost.rewards, lost.valid_action, lost.group_ids, lost.trajectory_ids,
                                lost.turn_index, gamma=0.0)


def test_trajectories_are_group_and_trajectory_id_pairs():
    # trajectory id 0 in two groups: two different trajectories with different last turns
    returns = discounted_step_returns(torch.tensor([1.0, 1.0, 2.0]), torch.ones(3, dtype=torch.bool),
                                      torch.tensor([0, 0, 1]), torch.tensor([0, 0, 0]), torch.tensor([0, 1, 0]),
                                      gamma=0.5)
    assert returns.tolist() == [0.5, 1.0, 2.0]


def test_degenerate_groups():
    # singleton step groups contribute 0; a one-row group gets GRPO's singleton advantage (mean 0, std 1)
    rewards = torch.tensor([3.0, 1.0, 0.0, 2.5])
    groups, anchors = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1, 2, 3])
    advantages, step = gigpo_advantages(rewards, rewards, groups, anchors)
    assert torch.equal(step, torch.zeros(4))
    assert advantages[3].item() == pytest.approx(2.5 / (1 + 1e-6), rel=1e-7)
    # all-equal step returns (not representable in binary) give exactly 0 in both modes
    equal = torch.full((5,), 0.1 * 0.95 ** 3)
    for norm in ("mean_std_norm", "mean_norm"):
        assert torch.equal(step_group_advantages(equal, torch.zeros(5, dtype=torch.long),
                                                 torch.zeros(5, dtype=torch.long), 1e-6, norm), torch.zeros(5))
    advantages, step = gigpo_advantages(torch.full((3,), 9.9), torch.full((3,), 9.9), torch.zeros(3, dtype=torch.long),
                                        torch.zeros(3, dtype=torch.long))
    assert torch.equal(advantages, torch.zeros(3)) and torch.equal(step, torch.zeros(3))
    single, single_step = gigpo_advantages(torch.tensor([0.7]), torch.tensor([0.7]), torch.tensor([3]),
                                           torch.tensor([0]))
    assert single.tolist() == pytest.approx([0.7 / (1 + 1e-6)], rel=1e-7) and single_step.tolist() == [0.0]


def test_invariant_to_row_order_and_anchor_ids_of_other_groups():
    generator = torch.Generator().manual_seed(0)
    rows = 40
    groups = torch.randint(0, 3, (rows,), generator=generator)
    anchors = groups * 10 + torch.randint(0, 4, (rows,), generator=generator)
    rewards = torch.randint(0, 2, (rows,), generator=generator).float() * 10
    returns = rewards * 0.9 ** torch.randint(0, 4, (rows,), generator=generator).float()
    advantages, step = gigpo_advantages(rewards, returns, groups, anchors)
    order = torch.randperm(rows, generator=generator)
    permuted, permuted_step = gigpo_advantages(rewards[order], returns[order], groups[order], anchors[order])
    assert torch.equal(permuted, advantages[order]) and torch.equal(permuted_step, step[order])


def test_objective_grpo_path_is_unchanged_and_gigpo_is_wired():
    batch = _batch([0] * 6, [0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1], [0, 1, 0, 1, 0, 2],
                   [10.0, 10.0, 0.0, -0.1, 10.0, 10.0], valid=[True, True, True, False, True, True])
    Objective().prepare(batch)
    assert torch.equal(batch.advantages, grpo_advantages(batch.rewards, batch.group_ids, 1e-6, True))
    assert "gigpo_step_advantage" not in batch.extras
    Objective(advantage="gigpo", gigpo_omega=0.0).prepare(batch)
    assert torch.equal(batch.advantages, grpo_advantages(batch.rewards, batch.group_ids, 1e-6, True))
    Objective(advantage="gigpo", gigpo_gamma=0.5).prepare(batch)
    returns = discounted_step_returns(batch.rewards, batch.valid_action, batch.group_ids, batch.trajectory_ids,
                                      batch.turn_index, 0.5)
    expected, step = gigpo_advantages(batch.rewards, returns, batch.group_ids, batch.anchor_ids, 1.0)
    assert torch.equal(batch.advantages, expected)
    assert torch.equal(batch.extras["gigpo_step_advantage"], step)
    assert step[5].item() == 0.0 and step[0].item() > 0 > step[2].item()   # turn 0: traj 1 lost, 0 and 2 won
    Objective(advantage="gigpo", norm_adv_by_std=False, gigpo_norm="mean_norm").prepare(batch)
    default_returns = discounted_step_returns(batch.rewards, batch.valid_action, batch.group_ids,
                                              batch.trajectory_ids, batch.turn_index, 0.95)
    centred = step_group_advantages(default_returns, batch.group_ids, batch.anchor_ids, 1e-6, "mean_norm")
    assert torch.equal(batch.advantages, grpo_advantages(batch.rewards, batch.group_ids, 1e-6, False) + centred)


@pytest.mark.parametrize("kwargs, key", [
    ({"advantage": "ppo"}, "model.objective.advantage"),
    ({"gigpo_omega": -1.0}, "model.objective.gigpo_omega"),
    ({"gigpo_omega": float("nan")}, "model.objective.gigpo_omega"),
    ({"gigpo_gamma": 0.0}, "model.objective.gigpo_gamma"),
    ({"gigpo_gamma": 1.5}, "model.objective.gigpo_gamma"),
    ({"gigpo_norm": "std"}, "model.objective.gigpo_norm"),
    ({"advantage": "gigpo", "norm_adv_by_std": False}, "norm_adv_by_std: false with gigpo_norm: mean_norm"),
    ({"advantage": "gigpo", "gigpo_norm": "mean_norm"}, "model.objective.gigpo_norm"),
])
def test_bad_gigpo_settings_name_the_key_and_the_fix(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        Objective(**kwargs)


def test_gigpo_needs_anchor_ids():
    batch = _batch([0, 0], [0, 1], [0, 0], [0, 0], [1.0, 0.0])
    batch.anchor_ids = None
    with pytest.raises(ValueError, match="anchor_ids"):
        Objective(advantage="gigpo").prepare(batch)
