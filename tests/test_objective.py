"""GRPO advantage, dual-clip surrogate, k3 and token-mean against hand-computed values."""

import math

import pytest
import torch

from craft_pl.objective import Objective, dual_clip_pg_loss, grpo_advantages, k3_kl, token_mean
from craft_pl.batch import RolloutBatch


def test_grpo_advantage_matches_hand_computation():
    rewards = torch.tensor([10.0, 0.0, 0.0, -0.1, 5.0])
    groups = torch.tensor([0, 0, 0, 0, 1])
    adv = grpo_advantages(rewards, groups, eps=1e-6, norm_by_std=True)
    values = [10.0, 0.0, 0.0, -0.1]
    mean = sum(values) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)  # unbiased
    expected = [(v - mean) / (std + 1e-6) for v in values]
    assert adv[:4].tolist() == pytest.approx(expected, rel=1e-6)
    assert adv[4].item() == pytest.approx(5.0)  # singleton group: mean 0, std 1


def test_grpo_advantage_without_std_and_equal_rewards_is_exactly_zero():
    rewards = torch.full((8,), -0.1)
    groups = torch.zeros(8, dtype=torch.long)
    assert torch.equal(grpo_advantages(rewards, groups, 1e-6, True), torch.zeros(8))
    centred = grpo_advantages(torch.tensor([1.0, 3.0]), torch.tensor([0, 0]), 1e-6, False)
    assert centred.tolist() == [-1.0, 1.0]


def test_dual_clip_surrogate_cases():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 5.0, 0.5]]))
    old = torch.zeros(1, 5)
    adv = torch.tensor([[1.0, 1.0, -2.0, -1.0, -1.0]])
    loss, clipped = dual_clip_pg_loss(logp, old, adv, clip_ratio=0.2, dual_clip=3.0)
    # ratio 1.5, A=1: max(-1.5, -1.2) = -1.2 (clipped)
    # ratio 0.5, A=1: max(-0.5, -0.8) = -0.5
    # ratio 1.1, A=-2: max(2.2, 2.2) = 2.2; dual bound 6 -> 2.2
    # ratio 5.0, A=-1: max(5, 1.2) = 5; dual bound 3 -> 3
    # ratio 0.5, A=-1: max(0.5, 0.8) = 0.8 (clipped)
    assert loss[0].tolist() == pytest.approx([-1.2, -0.5, 2.2, 3.0, 0.8], rel=1e-6)
    assert clipped[0].tolist() == [True, False, False, False, True]


def test_clip_higher_raises_only_the_upper_bound():
    logp = torch.log(torch.tensor([[1.5, 1.25, 0.5, 0.7, 5.0]]))
    old = torch.zeros(1, 5)
    adv = torch.tensor([[1.0, 1.0, -1.0, 1.0, -1.0]])
    loss, clipped = dual_clip_pg_loss(logp, old, adv, 0.2, 3.0, clip_ratio_high=0.28)
    # ratio 1.5, A=1: max(-1.5, -1.28) = -1.28 (clipped at 1 + 0.28, not 1.2)
    # ratio 1.25, A=1: inside [0.8, 1.28]: -1.25, not clipped (with 0.2 it would be -1.2, clipped)
    # ratio 0.5, A=-1: max(0.5, 0.8) = 0.8: the lower bound stays 1 - 0.2
    # ratio 0.7, A=1: max(-0.7, -0.8) = -0.7
    # ratio 5.0, A=-1: max(5, 1.28) = 5; dual bound 3 -> 3
    assert loss[0].tolist() == pytest.approx([-1.28, -1.25, 0.8, -0.7, 3.0], rel=1e-6)
    assert clipped[0].tolist() == [True, False, True, False, False]
    symmetric, _ = dual_clip_pg_loss(logp, old, adv, 0.2, 3.0)
    same, _ = dual_clip_pg_loss(logp, old, adv, 0.2, 3.0, clip_ratio_high=None)
    assert torch.equal(symmetric.view(torch.int32), same.view(torch.int32))  # None: bit for bit the old surrogate
    with pytest.raises(ValueError, match="clip_ratio_high"):
        Objective(clip_ratio_high=-0.1)


def test_log_ratio_is_clamped_before_exp():
    loss, _ = dual_clip_pg_loss(torch.tensor([[100.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), 0.2, 3.0)
    assert torch.isfinite(loss).all() and loss.item() == pytest.approx(-1.2)


def test_k3_matches_formula_and_clamps():
    logp = torch.tensor([[-1.0, -2.0, -30.0]])
    ref = torch.tensor([[-1.5, -1.0, -1.0]])
    k3 = k3_kl(logp, ref)
    for d, value in zip([-0.5, 1.0], k3[0, :2].tolist()):
        assert value == pytest.approx(math.exp(d) - d - 1, rel=1e-6)
    assert k3[0, 2].item() == 10.0  # exp(20) - 20 - 1 clamped to 10


def test_token_mean_uses_the_given_count():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert token_mean(values, mask, 5).item() == pytest.approx(15 / 5)
    assert token_mean(values, mask, 10).item() == pytest.approx(15 / 10)


def _batch(rows=2, width=3):
    mask = torch.ones(rows, width, dtype=torch.bool)
    mask[1, 2] = False
    return RolloutBatch(
        prompt_ids=[[1]] * rows, response_ids=[[1, 2, 3], [1, 2]], response_mask=mask,
        group_ids=torch.zeros(rows, dtype=torch.long), trajectory_ids=torch.arange(rows),
        turn_index=torch.zeros(rows, dtype=torch.long), rewards=torch.tensor([10.0, 0.0]),
        valid_action=torch.ones(rows, dtype=torch.bool), anchor_ids=torch.arange(rows),
        sampling_logp=torch.zeros(rows, width), old_logp=torch.full((rows, width), -1.0),
        ref_logp=torch.full((rows, width), -1.2),
    )


def test_compose_is_the_baseline_sum_in_order():
    objective = Objective(entropy_coef=0.001, kl_coef=0.01, distill_coef=0.0)
    batch = _batch()
    objective.prepare(batch)
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    entropy = torch.full((2, 3), 2.0)
    terms = objective.terms(batch, logp, entropy)
    loss, parts = objective.compose(terms)
    adv = batch.advantages
    pg = (-(adv[0] * 3) - adv[1] * 2) / 5
    kl = math.exp(-0.2) + 0.2 - 1
    assert loss.item() == pytest.approx(pg.item() - 0.001 * 2.0 + 0.01 * kl, abs=1e-6)
    assert parts["train/kl"].item() == pytest.approx(kl, rel=1e-5)
    loss.backward()
    # d loss / d logp = -A * ratio / N for unclipped tokens (ratio = 1), plus the k3 gradient
    expected_grad_row0 = (-adv[0] + 0.01 * (1 - math.exp(-0.2))) / 5
    assert logp.grad[0, 0].item() == pytest.approx(expected_grad_row0.item(), rel=1e-4)
    assert logp.grad[1, 2].item() == 0.0  # masked token


@pytest.mark.parametrize("kwargs", [{"pg_coef": -1.0}, {"kl_coef": -0.1}, {"clip_ratio": 0.0}, {"dual_clip": 1.0}])
def test_bad_coefficients_fail_with_the_name(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Objective(**kwargs)
