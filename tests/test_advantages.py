"""GiGPO's advantage (docs/methods.md#gigpo) against hand-computed values, degenerate cases, its step groupings and the
estimator classes the objective is given."""

import math

import pytest
import torch

from craft_pl.advantages import (GiGPOAdvantage, GRPOAdvantage, discounted_step_returns, gigpo_advantages,
                                  step_group_advantages)
from craft_pl.batch import RolloutBatch, anchor_ids, state_ids
from craft_pl.objective import Objective, grpo_advantages


def _std(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _normalised(values, eps=1e-6):
    mean = sum(values) / len(values)
    return [(v - mean) / (_std(values) + eps) for v in values]


def _batch(group_ids, trajectory_ids, turn_index, anchors, rewards, valid=None, states=None):
    rows = len(group_ids)
    return RolloutBatch(
        prompt_ids=[[1]] * rows, response_ids=[[1]] * rows, response_mask=torch.ones(rows, 1, dtype=torch.bool),
        group_ids=torch.tensor(group_ids), trajectory_ids=torch.tensor(trajectory_ids),
        turn_index=torch.tensor(turn_index), anchor_ids=torch.tensor(anchors),
        state_ids=torch.tensor(states) if states is not None else None,
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


def test_objective_takes_its_advantage_from_the_estimator_class():
    batch = _batch([0] * 6, [0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 1], [0, 1, 0, 1, 0, 2],
                   [10.0, 10.0, 0.0, -0.1, 10.0, 10.0], valid=[True, True, True, False, True, True],
                   states=[0, 1, 0, 1, 0, 2])
    assert isinstance(Objective().advantage, GRPOAdvantage) and Objective().prepare(batch) == {}
    assert torch.equal(batch.advantages, grpo_advantages(batch.rewards, batch.group_ids, 1e-6, True))
    Objective(advantage=GRPOAdvantage(norm_by_std=False)).prepare(batch)
    assert torch.equal(batch.advantages, grpo_advantages(batch.rewards, batch.group_ids, 1e-6, False))
    Objective(advantage=GiGPOAdvantage(omega=0.0)).prepare(batch)
    assert torch.equal(batch.advantages, grpo_advantages(batch.rewards, batch.group_ids, 1e-6, True))
    diagnostics = Objective(advantage=GiGPOAdvantage(gamma=0.5, step_grouping="state_and_turn")).prepare(batch)
    returns = discounted_step_returns(batch.rewards, batch.valid_action, batch.group_ids, batch.trajectory_ids,
                                      batch.turn_index, 0.5)
    expected, step = gigpo_advantages(batch.rewards, returns, batch.group_ids, batch.anchor_ids, 1.0)
    assert torch.equal(batch.advantages, expected)
    assert diagnostics == {"train/step_advantage_mean": float(step.mean()),
                           "train/step_advantage_abs_mean": float(step.abs().mean())}
    assert step[5].item() == 0.0 and step[0].item() > 0 > step[2].item()   # turn 0: traj 1 lost, 0 and 2 won
    Objective(advantage=GiGPOAdvantage(norm="mean_norm", step_grouping="state_and_turn")).prepare(batch)
    default_returns = discounted_step_returns(batch.rewards, batch.valid_action, batch.group_ids,
                                              batch.trajectory_ids, batch.turn_index, 0.95)
    centred = step_group_advantages(default_returns, batch.group_ids, batch.anchor_ids, 1e-6, "mean_norm")
    assert torch.equal(batch.advantages, grpo_advantages(batch.rewards, batch.group_ids, 1e-6, False) + centred)


def test_a_revisited_state_joins_its_earlier_visit_only_under_verl_agents_grouping():
    """Trajectory 0 goes A -> B -> A and wins; trajectory 1 stays in A and loses (gamma 0.5, centred only).
    Step returns: trajectory 0: 0.25, 0.5, 1.0; trajectory 1: 0, 0. Episode term: rewards 1,1,1,0,0 centred."""
    groups, turns, seen = [0] * 5, [0, 1, 2, 0, 1], ["A", "B", "A", "A", "A"]
    anchors, states = anchor_ids(groups, turns, seen), state_ids(groups, seen)
    assert anchors.tolist() == [0, 1, 2, 0, 3] and states.tolist() == [0, 1, 0, 0, 0]
    batch = _batch(groups, [0, 0, 0, 1, 1], turns, anchors.tolist(), [1.0, 1.0, 1.0, 0.0, 0.0],
                   states=states.tolist())
    episode = [0.4, 0.4, 0.4, -0.6, -0.6]
    # verl-agent: state A = rows 0, 2, 3, 4 with returns 0.25, 1.0, 0, 0 (mean 0.3125); B alone
    Objective(advantage=GiGPOAdvantage(gamma=0.5, norm="mean_norm")).prepare(batch)
    step = [-0.0625, 0.0, 0.6875, -0.3125, -0.3125]
    assert batch.advantages.tolist() == pytest.approx([e + s for e, s in zip(episode, step)], abs=1e-7)
    # same state at the same turn: only (turn 0, A) = rows 0 and 3 with returns 0.25, 0 (mean 0.125)
    Objective(advantage=GiGPOAdvantage(gamma=0.5, norm="mean_norm", step_grouping="state_and_turn")).prepare(batch)
    step = [0.125, 0.0, 0.0, -0.125, 0.0]
    assert batch.advantages.tolist() == pytest.approx([e + s for e, s in zip(episode, step)], abs=1e-7)
    # with std normalisation: state A's four returns normalised by their unbiased std
    Objective(advantage=GiGPOAdvantage(gamma=0.5)).prepare(batch)
    state_a = _normalised([0.25, 1.0, 0.0, 0.0])
    step = [state_a[0], 0.0, state_a[1], state_a[2], state_a[3]]
    assert batch.advantages.tolist() == pytest.approx([e + s for e, s in zip(_normalised([1, 1, 1, 0, 0]), step)],
                                                      rel=1e-6)


@pytest.mark.parametrize("kwargs, key", [
    ({"omega": -1.0}, "omega"),
    ({"omega": float("nan")}, "omega"),
    ({"gamma": 0.0}, "gamma"),
    ({"gamma": 1.5}, "gamma"),
    ({"norm": "std"}, "norm"),
    ({"eps": -1.0}, "eps"),
    ({"step_grouping": "turn"}, "step_grouping"),
])
def test_bad_gigpo_settings_name_the_key_and_the_fix(kwargs, key):
    with pytest.raises(ValueError, match=r"model\.objective\.init_args\.advantage\.init_args\." + key):
        GiGPOAdvantage(**kwargs)


def test_an_advantage_that_is_not_an_estimator_is_refused():
    with pytest.raises(ValueError, match="advantage estimator class"):
        Objective(advantage="gigpo")


def test_verl_agent_grouping_needs_state_ids():
    batch = _batch([0, 0], [0, 1], [0, 0], [0, 0], [1.0, 0.0])
    with pytest.raises(ValueError, match="state_ids"):
        Objective(advantage=GiGPOAdvantage()).prepare(batch)
    Objective(advantage=GiGPOAdvantage(step_grouping="state_and_turn")).prepare(batch)  # anchor_ids suffice
