"""Pillar 1, Counterfactual Token Importance: the estimator, the row <-> group layout, the pillar's hooks, and the
estimator's statistics against exact values (consistency on a bandit, exact enumeration of small groups)."""

import itertools
import math

import pytest
import torch

from craft_pl.loss import LossRecipe
from craft_pl.objective import LossTerms, Objective
from craft_pl.pillars.cti import (
    CounterfactualTokenImportance,
    counterfactual_token_importance,
    credit_from_cti,
    group_layout,
    groups_to_rows,
    rows_to_groups,
    trajectory_advantages,
)
from craft_pl.batch import RolloutBatch


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rows_batch(spec, width, generator, advantages=None):
    """A RolloutBatch from ``spec`` = [(group_id, trajectory_id, turn_index, length), ...] with random log-probs."""
    rows = len(spec)
    mask = torch.zeros(rows, width, dtype=torch.bool)
    for r, (_, _, _, length) in enumerate(spec):
        mask[r, :length] = True
    old = -torch.rand(rows, width, generator=generator) * 3
    batch = RolloutBatch(
        prompt_ids=[[1]] * rows, response_ids=[[1] * s[3] for s in spec],
        response_mask=mask,
        group_ids=torch.tensor([s[0] for s in spec]), trajectory_ids=torch.tensor([s[1] for s in spec]),
        turn_index=torch.tensor([s[2] for s in spec]),
        rewards=torch.zeros(rows), valid_action=torch.ones(rows, dtype=torch.bool), anchor_ids=torch.arange(rows),
        sampling_logp=old - torch.rand(rows, width, generator=generator),
        old_logp=old,
        teacher_logp=old + torch.randn(rows, width, generator=generator),
        advantages=advantages if advantages is not None else torch.randn(rows, generator=generator),
    )
    return batch


def _random_spec(generator, groups=3, size=4, max_turns=3, width=5):
    spec = []
    for g in range(groups):
        for j in range(size - (g == 2)):  # the last group has one trajectory fewer (padded slot)
            turns = int(torch.randint(1, max_turns + 1, (1,), generator=generator))
            for k in range(turns):
                spec.append((10 * g + 7, j, k, int(torch.randint(1, width + 1, (1,), generator=generator))))
    return spec  # trajectory ids repeat across groups on purpose: a trajectory is (group_id, trajectory_id)


def _pillar(**kwargs):
    return CounterfactualTokenImportance(**kwargs)


# ------------------------------------------------------------------------------------------------ estimator
def test_uniform_gaps_give_uniform_weights():
    mask = torch.rand(3, 5, 7, generator=_gen(1)) < 0.7
    gap = torch.full((3, 5, 7), 0.37)
    result = counterfactual_token_importance(gap, mask, torch.randn(3, 5, generator=_gen(2)), n_min=1,
                                             ess_min=0.0, return_weights=True)
    eye = torch.eye(5, dtype=torch.bool)[None, :, :, None]
    siblings = mask[:, None] & ~eye
    count = siblings.sum(2, keepdim=True)
    expected = torch.where(siblings, 1.0 / count.clamp_min(1).float(), 0.0)
    assert torch.allclose(result.weights, expected, atol=1e-7, rtol=0)
    active = mask & (result.n_siblings > 0)
    assert torch.allclose(result.ess[active], result.n_siblings[active].float(), rtol=1e-6)
    assert torch.equal(result.n_siblings, torch.where(mask, count[:, :, 0], 0))


def test_single_sibling_gives_difference_of_advantages_and_g2_weight_is_one():
    gap = torch.tensor([[[-1e4, -3.0, 0.0, 7.0, 1e4], [1e4, 2.0, 0.0, -7.0, -1e4]]])
    mask = torch.ones_like(gap, dtype=torch.bool)
    adv = torch.tensor([[0.31, -1.7]])
    for clip in (5.0, 1e5):
        result = counterfactual_token_importance(gap, mask, adv, gap_clip=clip, return_weights=True)
        assert torch.equal(result.weights[0, 0, 1], torch.ones(5))  # G = 2: weight 1 whatever the gap
        assert torch.equal(result.weights[0, 1, 0], torch.ones(5))
        assert torch.equal(result.cti[0, 0], torch.full((5,), -1.7 - 0.31))
        assert torch.equal(result.cti[0, 1], torch.full((5,), 0.31 + 1.7))
        assert torch.equal(result.ess, torch.ones_like(gap))
        assert not result.valid.any()  # defaults n_min = 2, ess_min = 1.5: G = 2 is never a valid estimate
    # a single active sibling inside a larger group, at one position
    gap = torch.randn(1, 4, 3, generator=_gen(3))
    mask = torch.tensor([[[1, 1, 1], [1, 0, 1], [1, 1, 0], [0, 0, 1]]], dtype=torch.bool)
    adv = torch.tensor([[0.5, -0.25, 1.5, -2.0]])
    result = counterfactual_token_importance(gap, mask, adv, n_min=1, ess_min=0.0)
    assert result.cti[0, 0, 1].item() == pytest.approx(1.5 - 0.5, abs=1e-7)  # only sibling 2 is active at t=1
    assert result.cti[0, 2, 1].item() == pytest.approx(0.5 - 1.5, abs=1e-7)


def test_hand_computed_weights_cti_and_group_loo():
    gap = torch.tensor([[[0.0], [1.0], [-2.0]]])
    mask = torch.ones_like(gap, dtype=torch.bool)
    adv = torch.tensor([[1.0, 0.5, -1.5]])
    result = counterfactual_token_importance(gap, mask, adv, tau=2.0, gap_clip=1.5, n_min=1, ess_min=0.0)
    u1, u2 = 1.0 / 2.0, -1.5 / 2.0  # sibling 2's gap is clipped at -1.5
    w1, w2 = math.exp(u1) / (math.exp(u1) + math.exp(u2)), math.exp(u2) / (math.exp(u1) + math.exp(u2))
    assert result.a_bar[0, 0, 0].item() == pytest.approx(w1 * 0.5 + w2 * -1.5, rel=1e-6)
    assert result.cti[0, 0, 0].item() == pytest.approx(w1 * 0.5 + w2 * -1.5 - 1.0, rel=1e-6)
    assert result.ess[0, 0, 0].item() == pytest.approx(1 / (w1 ** 2 + w2 ** 2), rel=1e-6)
    assert result.max_weight[0, 0, 0].item() == pytest.approx(w1, rel=1e-6)
    loo = counterfactual_token_importance(gap, mask, adv, tau=2.0, gap_clip=1.5, baseline="group_loo")
    assert loo.cti[0, 0, 0].item() == pytest.approx(w1 * 0.5 + w2 * -1.5 - (0.5 - 1.5) / 2, rel=1e-6)


def test_masked_positions_contribute_nothing():
    gap = torch.randn(2, 4, 6, generator=_gen(4))
    mask = torch.rand(2, 4, 6, generator=_gen(5)) < 0.6
    adv = torch.randn(2, 4, 6, generator=_gen(6))  # per-token advantages, masked ones garbage too
    changed_gap = torch.where(mask, gap, torch.tensor([float("nan"), float("inf"), 1e4, -3.0]).repeat(12)[:48]
                              .view(2, 4, 6))
    changed_adv = torch.where(mask, adv, float("nan"))
    a = counterfactual_token_importance(gap, mask, adv, n_min=1, ess_min=0.0, return_weights=True)
    b = counterfactual_token_importance(changed_gap, mask, changed_adv, n_min=1, ess_min=0.0, return_weights=True)
    for key in ("cti", "a_bar", "ess", "valid", "n_siblings", "max_weight", "weights"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key
    # the same through the pillar: teacher/old log-probs off the response mask never matter
    batch = _rows_batch(_random_spec(_gen(7)), 5, _gen(8))
    other = _rows_batch(_random_spec(_gen(7)), 5, _gen(8))
    other.teacher_logp = torch.where(other.response_mask, other.teacher_logp, 123.0)
    other.old_logp = torch.where(other.response_mask, other.old_logp, -77.0)
    pillar = _pillar(n_min=1, ess_min=0.0)
    pillar.prepare(batch)
    pillar.prepare(other)
    assert torch.equal(batch.extras["cti"], other.extras["cti"])
    assert torch.equal(batch.extras["cti_valid"], other.extras["cti_valid"])


def test_no_nan_when_one_sibling_dominates_or_none_is_active():
    gap = torch.tensor([[[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 0.0, 0.0]]])
    mask = torch.tensor([[[1, 1, 1], [1, 1, 0], [1, 1, 0]]], dtype=torch.bool)
    adv = torch.tensor([[1.0, -1.0, 0.25]])
    for clip, tau in ((5.0, 1.0), (1e5, 1.0), (1e5, 1e-3)):
        result = counterfactual_token_importance(gap, mask, adv, tau=tau, gap_clip=clip, return_weights=True)
        for key in ("cti", "a_bar", "ess", "max_weight", "weights"):
            assert torch.isfinite(getattr(result, key)).all(), (key, clip)
    assert result.weights[0, 2, 0, 0].item() == 1.0  # sibling 0 carries all the weight
    assert result.ess[0, 2, 0].item() == 1.0
    assert result.n_siblings[0, 2, 0].item() == 2 and not result.valid[0, 2, 0]  # ESS 1 < ess_min = 1.5
    tie = counterfactual_token_importance(torch.zeros(1, 3, 1), torch.ones(1, 3, 1, dtype=torch.bool), adv)
    assert tie.ess[0, 0, 0].item() == pytest.approx(2.0) and tie.valid.all()  # equal gaps: ESS 2 >= 1.5
    assert not counterfactual_token_importance(torch.zeros(1, 3, 1), torch.ones(1, 3, 1, dtype=torch.bool), adv,
                                               n_min=3).valid.any()  # 2 siblings < n_min = 3
    # at t=2 only trajectory 0 is active: no sibling, so no estimate (and no NaN)
    assert result.n_siblings[0, 0, 2].item() == 0 and result.cti[0, 0, 2].item() == 0.0
    assert result.ess[0, 0, 2].item() == 0.0 and not result.valid[0, 0, 2]
    assert torch.equal(result.weights[0, 0, :, 2], torch.zeros(3))


def test_cti_is_exactly_zero_when_all_active_advantages_are_equal():
    gen = _gen(9)
    gap = torch.randn(4, 6, 5, generator=gen) * 3
    mask = torch.rand(4, 6, 5, generator=gen) < 0.8
    value = 0.1 + 1 / 3  # not representable: rounding would leave ulps
    adv = torch.full((4, 6), value)
    naive = counterfactual_token_importance(gap, mask, adv, n_min=1, ess_min=0.0, return_weights=True)
    rounding = (naive.weights * adv[:, None, :, None]).sum(2) - adv[:, :, None]
    assert (rounding[mask] != 0).any()  # the test is not vacuous: plain arithmetic leaves ulps
    for baseline in ("self", "group_loo"):
        result = counterfactual_token_importance(gap, mask, adv, n_min=1, ess_min=0.0, baseline=baseline)
        assert torch.equal(result.cti, torch.zeros_like(result.cti))
    # "self": only the *active* siblings matter; an inactive sibling with another advantage changes nothing
    adv2 = adv.clone()
    adv2[:, 5] = -4.0
    mask2 = mask.clone()
    mask2[:, 5] = False
    assert torch.equal(counterfactual_token_importance(gap, mask2, adv2).cti, torch.zeros(4, 6, 5))
    # "group_loo": zero as soon as the siblings agree with each other, whatever A^(i)
    adv3 = adv.clone()
    adv3[:, 0] = 2.0
    loo = counterfactual_token_importance(gap, mask, adv3, baseline="group_loo")
    assert torch.equal(loo.cti[:, 0], torch.zeros(4, 5))
    assert (loo.cti[:, 1:][mask[:, 1:] & (mask[:, :1].expand(-1, 5, -1))] != 0).all()


def test_dead_zone_zeroes_tiny_cti_only():
    gap = torch.tensor([[[0.3], [-0.2], [1.1]]])
    mask = torch.ones_like(gap, dtype=torch.bool)
    adv = torch.tensor([[0.5, 0.5, 0.5 + 1e-6]])
    plain = counterfactual_token_importance(gap, mask, adv, dead_zone=0.0)
    assert (plain.cti[0, :2, 0] != 0).all() and plain.cti[0, :2, 0].abs().max() < 1e-6
    zoned = counterfactual_token_importance(gap, mask, adv, dead_zone=1e-4)
    assert torch.equal(zoned.cti, torch.zeros_like(zoned.cti))
    big = counterfactual_token_importance(gap, mask, torch.tensor([[0.5, 0.5, 1.5]]), dead_zone=1e-4)
    assert torch.equal(big.cti, counterfactual_token_importance(gap, mask, torch.tensor([[0.5, 0.5, 1.5]])).cti)
    assert (big.cti[0, :2, 0] > 0.1).all()
    # the threshold scales with the group's max |A|: the same tiny relative difference, in two groups of
    # different scale, is zeroed in both; an absolute 1e-4 threshold would keep the large group's CTI
    scaled = torch.tensor([[500.0, 500.0, 500.0 + 2 * 6.103515625e-05], [0.5, 0.5, 0.5 + 1e-6]])
    two = counterfactual_token_importance(gap.expand(2, 3, 1), mask.expand(2, 3, 1), scaled, dead_zone=0.0)
    assert (two.cti[0, :2, 0].abs() > 1e-5).all()
    assert torch.equal(counterfactual_token_importance(gap.expand(2, 3, 1), mask.expand(2, 3, 1), scaled,
                                                       dead_zone=1e-4).cti, torch.zeros(2, 3, 1))


# ------------------------------------------------------------------------------------------------------ layout
def test_flat_turn_token_and_turn_positions():
    # group 5: trajectory 3 has turns of lengths 2 and 3 (rows given turn 1 first); trajectory 1 has 4 then 1
    spec = [(5, 3, 1, 3), (5, 1, 0, 4), (5, 3, 0, 2), (5, 1, 1, 1), (2, 9, 0, 2)]
    batch = _rows_batch(spec, 4, _gen(10))
    flat = group_layout(batch.group_ids, batch.trajectory_ids, batch.turn_index, batch.response_mask, "flat")
    assert flat.group.tolist() == [1, 1, 1, 1, 0] and flat.slot.tolist() == [1, 0, 1, 0, 0]
    assert flat.position.tolist() == [[2, 3, 4, -1], [0, 1, 2, 3], [0, 1, -1, -1], [4, -1, -1, -1],
                                      [0, 1, -1, -1]]
    assert (flat.num_groups, flat.group_size, flat.length) == (2, 2, 5)
    pair = group_layout(batch.group_ids, batch.trajectory_ids, batch.turn_index, batch.response_mask, "turn_token")
    assert pair.position.tolist() == [[4, 5, 6, -1], [0, 1, 2, 3], [0, 1, -1, -1], [4, -1, -1, -1],
                                      [0, 1, -1, -1]]
    turn = group_layout(batch.group_ids, batch.trajectory_ids, batch.turn_index, batch.response_mask, "turn")
    assert turn.position.tolist() == [[1, 1, 1, -1], [0, 0, 0, 0], [0, 0, -1, -1], [1, -1, -1, -1],
                                      [0, 0, -1, -1]]
    values = torch.arange(20.0).view(5, 4)
    assert torch.equal(groups_to_rows(rows_to_groups(values, flat), flat), torch.where(flat.mask, values, 0.0))
    means = rows_to_groups(values, turn)
    assert means[1, 1, 1].item() == pytest.approx((0 + 1 + 2) / 3) and means[1, 0, 0].item() == 5.5
    advantages = torch.tensor([1.0, 2.0, 3.0, 6.0, -1.0])
    assert trajectory_advantages(advantages, flat).tolist() == [[-1.0, 0.0], [4.0, 2.0]]
    with pytest.raises(ValueError, match="share"):
        group_layout(torch.tensor([1, 1]), torch.tensor([0, 0]), torch.tensor([2, 2]), torch.ones(2, 3), "flat")


def test_flat_alignment_compares_the_same_flattened_index():
    # trajectory 0: turns of length 2 then 2; trajectory 1: one turn of length 4; trajectory 2: turns of 1 and 3
    spec = [(0, 0, 0, 2), (0, 0, 1, 2), (0, 1, 0, 4), (0, 2, 1, 3), (0, 2, 0, 1)]
    batch = _rows_batch(spec, 4, _gen(11), advantages=torch.tensor([1.0, 1.0, -0.5, 2.0, 2.0]))
    pillar = _pillar(n_min=1, ess_min=0.0, dead_zone=0.0)
    pillar.prepare(batch)
    gap = batch.teacher_logp - batch.old_logp
    # flat index t = 2 of trajectory 0 is row 1 column 0; siblings at t = 2: row 2 column 2 and row 3 column 1
    u1, u2 = gap[2, 2].clamp(-5, 5).item(), gap[3, 1].clamp(-5, 5).item()
    expected = (math.exp(u1) * -0.5 + math.exp(u2) * 2.0) / (math.exp(u1) + math.exp(u2)) - 1.0
    assert batch.extras["cti"][1, 0].item() == pytest.approx(expected, rel=1e-5)
    turn = _pillar(n_min=1, ess_min=0.0, dead_zone=0.0, align="turn")
    turn.prepare(batch)
    # one CTI per (trajectory, turn), from the per-turn mean gaps, broadcast to the turn's tokens
    mean = lambda r: gap[r, : spec[r][3]].mean().clamp(-5, 5).item()  # noqa: E731
    expected = (math.exp(mean(2)) * -0.5 + math.exp(mean(4)) * 2.0) / (math.exp(mean(2)) + math.exp(mean(4))) - 1.0
    assert torch.allclose(batch.extras["cti"][0, :2], torch.full((2,), expected), rtol=1e-5)
    assert batch.extras["cti"][0, 2:].tolist() == [0.0, 0.0]


def test_trajectory_and_row_advantages():
    # trajectory 0: turn 0 (2 tokens, A = 1.0), turn 1 (2 tokens, A = 0.0); trajectory 1: one turn of 4, A = -1
    spec = [(0, 0, 1, 2), (0, 1, 0, 4), (0, 0, 0, 2)]
    batch = _rows_batch(spec, 4, _gen(23), advantages=torch.tensor([0.0, -1.0, 1.0]))
    _pillar(n_min=1, ess_min=0.0, sibling_advantage="row").prepare(batch)
    assert batch.extras["cti"][1].tolist() == [2.0, 2.0, 1.0, 1.0]  # one sibling: A_j(t) - A_i(t)
    assert batch.extras["cti"][2, :2].tolist() == [-2.0, -2.0] and batch.extras["cti"][0, :2].tolist() == [-1.0, -1.0]
    _pillar(n_min=1, ess_min=0.0).prepare(batch)  # default: A^(0) = mean of its rows = 0.5
    assert batch.extras["cti"][1].tolist() == [1.5] * 4 and batch.extras["cti"][0, :2].tolist() == [-1.5, -1.5]


def test_chunking_over_groups_changes_no_bit(monkeypatch):
    batch = _rows_batch(_random_spec(_gen(24), groups=5), 5, _gen(25))
    _pillar().prepare(batch)
    whole = {k: v.clone() for k, v in batch.extras.items()}
    monkeypatch.setattr("craft_pl.pillars.cti.CHUNK_ELEMENTS", 1)  # one group at a time
    _pillar().prepare(batch)
    for key, value in whole.items():
        assert torch.equal(batch.extras[key], value), key


@pytest.mark.parametrize("align", ["flat", "turn_token", "turn"])
@pytest.mark.parametrize("advantage,baseline", [("trajectory", "self"), ("row", "group_loo")])
def test_invariant_to_row_permutation(align, advantage, baseline):
    batch = _rows_batch(_random_spec(_gen(12)), 5, _gen(13))
    permutation = torch.randperm(batch.num_rows, generator=_gen(14))
    shuffled = batch.select(permutation)
    pillar = _pillar(align=align, sibling_advantage=advantage, cti_baseline=baseline, n_min=1, ess_min=0.0)
    pillar.prepare(batch)
    metrics = pillar.metrics()
    pillar.prepare(shuffled)
    for key in ("cti", "cti_valid", "cti_phi"):
        assert torch.equal(shuffled.extras[key], batch.extras[key][permutation]), key
    assert batch.extras["cti_valid"].any() and (batch.extras["cti"] != 0).any()
    assert pillar.metrics() == pytest.approx(metrics, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------------------------------------------ pillar
def test_credit_modes_on_a_hand_computed_case():
    gate = torch.tensor([[0.8, 0.3, 0.6, 0.9]])
    cti = torch.tensor([[0.5, -0.2, 0.9, 0.0]])
    valid = torch.tensor([[True, True, False, True]])
    t1, t2 = math.tanh(0.5 / 0.5), math.tanh(-0.2 / 0.5)
    expected = {
        "gate_tanh": [0.8 * t1, 0.3 * t2, 0.6, 0.0],
        "tanh": [t1, t2, 0.6, 0.0],
        "signed_gate": [(2 * 0.8 - 1) * t1, (2 * 0.3 - 1) * t2, 0.6, 0.0],
        "gate_sign": [0.8, -0.3, 0.6, 0.0],
    }
    for mode, values in expected.items():
        pillar = _pillar(credit_mode=mode, kappa=0.5)
        batch = _rows_batch([(0, 0, 0, 4)], 4, _gen(15))
        batch.extras.update(cti=cti, cti_valid=valid)
        logp = torch.zeros(1, 4, requires_grad=True)
        terms = LossTerms(mask=torch.ones(1, 4, dtype=torch.bool), num_tokens=4, logp=logp, pg=torch.zeros(1, 4),
                          clipped=torch.zeros(1, 4, dtype=torch.bool), entropy=torch.zeros(1, 4), kl=None,
                          coefficients={"distill": 0.1}, teacher_logp=torch.zeros(1, 4), gate=gate)
        before = dict(vars(terms))
        out = pillar.transform(terms, batch)
        assert out.credit[0].tolist() == pytest.approx(values, rel=1e-6), mode
        assert not out.credit.requires_grad
        assert all(getattr(out, k) is v for k, v in before.items() if k != "credit")
        assert torch.equal(credit_from_cti(gate, cti, valid, 0.5, mode), out.credit)
        none = _pillar(credit_mode=mode, kappa=0.5, fallback="none").transform(LossTerms(**before), batch).credit
        assert torch.equal(none[valid], out.credit[valid]) and torch.equal(none[~valid], torch.zeros(1))


def test_pillar_dead_zone_gives_zero_credit_on_tiny_cti():
    one_plus = 1.0 + 2.0 ** -22  # two ulps above 1: CTI of order 1e-7
    batch = _rows_batch([(0, j, 0, 3) for j in range(4)], 3, _gen(16),
                        advantages=torch.tensor([1.0, 1.0, 1.0, one_plus]))
    plain = _pillar(dead_zone=0.0)
    plain.prepare(batch)
    assert batch.extras["cti_valid"].all() and (batch.extras["cti"][3] != 0).all()  # |CTI| ~ 2e-7 without zone
    zoned = _pillar()  # default dead_zone = 1e-6
    zoned.prepare(batch)
    assert batch.extras["cti_valid"].all() and torch.equal(batch.extras["cti"], torch.zeros(4, 3))
    objective = Objective(distill_coef=0.1, kl_coef=0.0)
    terms = objective.terms(batch, batch.old_logp.clone(), torch.zeros(4, 3))
    assert torch.equal(zoned.transform(terms, batch).credit, torch.zeros(4, 3))


def test_prepare_metrics_and_no_side_effects():
    # G = 3, uniform gaps, trajectory-constant advantages: ESS = 2, weights 1/2, CTI linear in -A (corr = -1)
    spec = [(0, j, k, 3) for j in range(3) for k in range(2)]
    adv = torch.tensor([1.0, 1.0, -0.5, -0.5, -0.5, -0.5])
    batch = _rows_batch(spec, 3, _gen(17), advantages=adv)
    batch.teacher_logp = batch.old_logp + 0.4
    saved = {k: getattr(batch, k).clone() for k in ("advantages", "old_logp", "teacher_logp", "sampling_logp")}
    rng = torch.get_rng_state()
    pillar = _pillar()
    pillar.prepare(batch)
    assert torch.equal(torch.get_rng_state(), rng)
    for key, value in saved.items():
        assert torch.equal(getattr(batch, key), value), key
    metrics = pillar.metrics()
    assert set(metrics) == {"ess_mean", "ess_ratio", "valid_fraction", "negative_credit_fraction", "max_weight",
                            "corr_with_advantage"}
    assert metrics["ess_mean"] == pytest.approx(2.0) and metrics["ess_ratio"] == pytest.approx(1.0)
    assert metrics["valid_fraction"] == 1.0 and metrics["max_weight"] == pytest.approx(0.5)
    assert metrics["negative_credit_fraction"] == pytest.approx(1 / 3)  # only the successful trajectory
    assert metrics["corr_with_advantage"] == pytest.approx(-1.0)
    assert torch.allclose(batch.extras["cti_phi"][:2], torch.full((2, 3), math.tanh(-0.5 - 1.0)))
    # the "sampling" gap source reads sampling_logp instead of old_logp
    sampling = _pillar(gap_source="sampling", tau=0.3)
    sampling.prepare(batch)
    swapped = _rows_batch(spec, 3, _gen(17), advantages=adv)
    swapped.teacher_logp, swapped.old_logp = batch.teacher_logp, batch.sampling_logp
    reference = _pillar(tau=0.3)
    reference.prepare(swapped)
    assert torch.equal(batch.extras["cti"], swapped.extras["cti"])


def test_non_trivial_credit_through_objective_and_mini_batches():
    batch = _rows_batch(_random_spec(_gen(18)), 5, _gen(19))
    objective = Objective(distill_coef=0.1, kl_coef=0.0)
    batch.rewards = torch.randn(batch.num_rows, generator=_gen(20))
    pillar = _pillar(n_min=1, ess_min=0.5, kappa=0.7)
    recipe = LossRecipe(objective, [pillar])
    recipe.prepare(batch)
    valid, cti = batch.extras["cti_valid"], batch.extras["cti"]
    assert (batch.response_mask & ~valid).any()  # some tokens have no active sibling: fallback
    assert torch.equal(batch.extras["cti_phi"], torch.where(valid, torch.tanh(cti / 0.7), 1.0))
    assert torch.equal(cti[~valid], torch.zeros(int((~valid).sum())))
    micro = batch.select(torch.tensor([3, 0, 7]))
    logp = micro.old_logp.clone().requires_grad_(True)
    baseline = LossRecipe(objective, []).loss(micro, logp, torch.zeros_like(logp)).loss
    result = recipe.loss(micro, logp, torch.zeros_like(logp))
    out, loss = result.terms, result.loss
    assert torch.equal(result.inspected["cti"], micro.extras["cti"])  # what the credit inspector shows
    assert torch.isfinite(loss) and loss.item() != baseline.item()
    valid = micro.extras["cti_valid"] & micro.response_mask
    assert torch.equal(out.credit[~valid & micro.response_mask], out.gate[~valid & micro.response_mask])
    assert (out.credit[valid] < 0).any() and (out.credit[valid] > 0).any()


@pytest.mark.parametrize("kwargs", [{"tau": 0.0}, {"gap_clip": -1.0}, {"kappa": float("inf")}, {"n_min": 0},
                                    {"ess_min": -0.5}, {"dead_zone": -1e-3}, {"align": "token"},
                                    {"credit_mode": "gate"}, {"cti_baseline": "mean"}, {"sibling_advantage": "turn"},
                                    {"gap_source": "ref"}, {"fallback": "zero"}])
def test_bad_arguments_name_the_argument(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        _pillar(**kwargs)


# ---------------------------------------------------------------------------------------- statistics, exact
P_OLD = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
P_TEACHER = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
REWARD = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)


def test_consistency_on_a_bandit_error_shrinks_like_one_over_sqrt_n():
    """One step (t = 0), K = 3 actions, A = reward: at τ = 1 Ā -> E_{a~π_T}[reward] with MAE ~ 1/sqrt(n)."""
    target = float((P_TEACHER * REWARD).sum())  # 0.65, against 0.35 under the student
    log_ratio = (P_TEACHER.log() - P_OLD.log()).float()
    generator = _gen(21)
    errors, biases = [], []
    for n, draws in ((8, 4000), (64, 500), (512, 64)):
        actions = torch.multinomial(P_OLD.float().expand(draws, 3), n + 1, replacement=True, generator=generator)
        gap = log_ratio[actions][..., None]  # every trajectory's Ā uses its n siblings (leave-one-out)
        result = counterfactual_token_importance(gap, torch.ones_like(gap, dtype=torch.bool),
                                                 REWARD.float()[actions], tau=1.0, gap_clip=50.0)
        estimate = result.a_bar[..., 0].double()
        errors.append(float((estimate - target).abs().mean()))
        biases.append(float(estimate.mean() - target))
    assert 2.0 < errors[0] / errors[1] < 4.0 and 2.0 < errors[1] / errors[2] < 4.0, errors
    assert 0.7 * 8 < errors[0] / errors[2] < 1.4 * 8, errors
    assert errors[2] < 0.03 and abs(biases[2]) < 0.01, (errors, biases)


def _reference_cti(actions, tau, clip):
    """CTI of trajectory 0 by the spec's formula, one outcome at a time, with A = reward - group mean."""
    rewards = [float(REWARD[a]) for a in actions]
    advantages = [r - sum(rewards) / len(rewards) for r in rewards]
    logits = [max(-clip, min(clip, math.log(P_TEACHER[a] / P_OLD[a]))) / tau for a in actions[1:]]
    total = sum(math.exp(u) for u in logits)
    return sum(math.exp(u) / total * a for u, a in zip(logits, advantages[1:])) - advantages[0]


@pytest.mark.parametrize("size,tau,clip", [(3, 1.0, 50.0), (4, 0.7, 0.8)])
def test_exact_enumeration_matches_reference_and_monte_carlo(size, tau, clip):
    """Enumerate every joint outcome of a group (K = 3, G <= 4): exact mean / variance of CTI^(0); the pillar on
    sampled groups (rows shuffled) must agree within Monte-Carlo error."""
    outcomes = torch.tensor(list(itertools.product(range(3), repeat=size)))
    probability = P_OLD[outcomes].prod(dim=1)
    rewards = REWARD[outcomes]
    advantages = (rewards - rewards.mean(dim=1, keepdim=True)).float()
    log_ratio = (P_TEACHER.log() - P_OLD.log()).float()
    gap = log_ratio[outcomes][..., None]
    exact = counterfactual_token_importance(gap, torch.ones_like(gap, dtype=torch.bool), advantages, tau=tau,
                                            gap_clip=clip, n_min=1, ess_min=0.0).cti[:, 0, 0].double()
    reference = torch.tensor([_reference_cti(o.tolist(), tau, clip) for o in outcomes], dtype=torch.float64)
    assert torch.allclose(exact, reference, atol=1e-6)
    mean = float((probability * exact).sum())
    variance = float((probability * (exact - mean) ** 2).sum())
    fourth = float((probability * (exact - mean) ** 4).sum())

    draws = 3000
    generator = _gen(22 + size)
    sampled = torch.multinomial(P_OLD.float().expand(draws, 3), size, replacement=True, generator=generator)
    rows = [(b, b * size + j, 0, 1) for b in range(draws) for j in range(size)]
    sampled_rewards = REWARD[sampled]
    row_advantages = (sampled_rewards - sampled_rewards.mean(dim=1, keepdim=True)).float().reshape(-1)
    batch = _rows_batch(rows, 1, generator, advantages=row_advantages)
    batch.old_logp = P_OLD.log().float()[sampled].reshape(-1, 1)
    batch.teacher_logp = P_TEACHER.log().float()[sampled].reshape(-1, 1)
    batch = batch.select(torch.randperm(batch.num_rows, generator=generator))
    pillar = _pillar(tau=tau, gap_clip=clip, n_min=1, ess_min=0.0, dead_zone=0.0)
    pillar.prepare(batch)
    first = batch.trajectory_ids % size == 0
    assert bool(batch.extras["cti_valid"][first].all())
    estimates = batch.extras["cti"][first, 0].double()
    standard_error = math.sqrt(variance / draws)
    assert abs(float(estimates.mean()) - mean) < 4 * standard_error, (float(estimates.mean()), mean)
    variance_error = math.sqrt((fourth - variance ** 2) / draws)
    assert abs(float(estimates.var()) - variance) < 4 * variance_error, (float(estimates.var()), variance)


def test_exact_teacher_effect_g2_none_g4_partial():
    """Exact means with A = reward: G = 2 recovers only the student's value; G = 4 moves part of the way."""
    log_ratio = (P_TEACHER.log() - P_OLD.log()).float()
    student, teacher = float((P_OLD * REWARD).sum()), float((P_TEACHER * REWARD).sum())
    means = {}
    for size in (2, 4):
        outcomes = torch.tensor(list(itertools.product(range(3), repeat=size)))
        probability = P_OLD[outcomes].prod(dim=1)
        gap = log_ratio[outcomes][..., None]
        result = counterfactual_token_importance(gap, torch.ones_like(gap, dtype=torch.bool),
                                                 REWARD.float()[outcomes], tau=1.0, gap_clip=50.0)
        means[size] = float((probability * result.a_bar[:, 0, 0].double()).sum())
    assert means[2] == pytest.approx(student, abs=1e-6)
    assert student + 0.2 * (teacher - student) < means[4] < teacher
