"""Pillar 1 with ``grouping="anchor"`` (per-state CTI): hand-computed values, the gate fallback, coverage, ties, the
unchanged ``group`` path, and the direction of the effect on the exact tabular model of ``benchmarks/``."""

import math

import pytest
import torch

from benchmarks.per_state_credit import evaluate
from benchmarks.per_state_fallback import sample, used_token_scores
from benchmarks.tabular_mdp import default_mdp, exact
from craft_pl.batch import RolloutBatch
from craft_pl.objective import Objective
from craft_pl.pillars import canonical_order
from craft_pl.pillars.cti import CounterfactualTokenImportance


def _batch(spec, gaps, advantages, width=1):
    """Rows from ``spec`` = [(group, trajectory, turn, anchor), ...]; ``gaps`` ``[rows, width]``, ``advantages``."""
    rows = len(spec)
    old = torch.full((rows, width), -1.0)
    return RolloutBatch(
        prompt_ids=[[1]] * rows, response_ids=[[1] * width] * rows,
        response_mask=torch.ones(rows, width, dtype=torch.bool),
        group_ids=torch.tensor([s[0] for s in spec]), trajectory_ids=torch.tensor([s[1] for s in spec]),
        turn_index=torch.tensor([s[2] for s in spec]), anchor_ids=torch.tensor([s[3] for s in spec]),
        rewards=torch.zeros(rows), valid_action=torch.ones(rows, dtype=torch.bool),
        sampling_logp=old.clone(), old_logp=old, teacher_logp=old + torch.as_tensor(gaps, dtype=torch.float32),
        advantages=torch.as_tensor(advantages, dtype=torch.float32))


# group 3: four trajectories, two turns; turn 0: one state; turn 1: trajectories 0, 1, 2 in state 11, 3 in state 12.
SPEC = [(3, j, k, 10 if k == 0 else (11 if j < 3 else 12)) for j in range(4) for k in range(2)]
GAPS = [[0.0], [0.5], [1.0], [-1.0], [-0.5], [2.0], [0.3], [0.7]]      # row order of SPEC: (j, k)
ADVANTAGES = [1.0, 1.0, -1.0, -1.0, 0.5, 0.5, -0.5, -0.5]                 # one value per trajectory


def _run(batch, **kwargs):
    pillar = CounterfactualTokenImportance(grouping="anchor", align="turn_token", **kwargs)
    pillar.prepare(batch)
    terms = Objective(kl_coef=0.0, distill_coef=0.01).terms(batch, batch.old_logp, torch.zeros_like(batch.old_logp))
    return pillar, pillar.transform(terms, batch)


def test_hand_computed_per_state_cti_and_gate_fallback():
    batch = _batch(SPEC, GAPS, ADVANTAGES)
    pillar, terms = _run(batch, ess_min=0.0, dead_zone=0.0)
    cti, valid = batch.extras["cti"][:, 0], batch.extras["cti_valid"][:, 0]
    a = [1.0, -1.0, 0.5, -0.5]
    gap0 = [GAPS[2 * j][0] for j in range(4)]                             # turn 0: every trajectory, one state
    gap1 = [GAPS[2 * j + 1][0] for j in range(3)]                         # turn 1, state 11: trajectories 0, 1, 2

    def loo(gaps, advantages, i):
        weights = [math.exp(g) for j, g in enumerate(gaps) if j != i]
        values = [v for j, v in enumerate(advantages) if j != i]
        return sum(w * v for w, v in zip(weights, values)) / sum(weights) - advantages[i]

    expected = [loo(gap0, a, 0), loo(gap1, a[:3], 0), loo(gap0, a, 1), loo(gap1, a[:3], 1),
                loo(gap0, a, 2), loo(gap1, a[:3], 2), loo(gap0, a, 3), 0.0]
    assert cti.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert valid.tolist() == [True] * 7 + [False]                        # trajectory 3 is alone in state 12
    gate = terms.gate[:, 0]
    assert terms.credit[7, 0].item() == gate[7].item()                    # fallback: the plain SDAR gate, exactly
    assert torch.allclose(terms.credit[:7, 0], gate[:7] * torch.tanh(cti[:7]))
    metrics = pillar.metrics()
    assert metrics["anchor_coverage"] == 7 / 8 and metrics["valid_fraction"] == 7 / 8
    assert {"ess_mean", "ess_ratio", "max_weight", "corr_with_advantage"} <= set(metrics)


def test_n_min_counts_same_state_siblings_and_ess_is_reported():
    batch = _batch(SPEC, GAPS, ADVANTAGES)
    pillar, _ = _run(batch, n_min=3, ess_min=0.0)                          # turn 1's state 11 has only 2 siblings
    assert batch.extras["cti_valid"][:, 0].tolist() == [True, False] * 4
    assert pillar.metrics()["anchor_coverage"] == 7 / 8                    # coverage counts any same-state sibling
    _run(batch, ess_min=2.5)                                                 # ESS <= 2 siblings on turn 1
    assert not bool(batch.extras["cti_valid"][[1, 3, 5, 7], 0].any())


def test_exact_tie_among_same_state_siblings_gives_zero():
    # turn 1: trajectories 0, 1, 2 share state 11 and one advantage; trajectory 3 (another state) differs
    advantages = [0.3, 0.3, 0.3, 0.3, 0.3, 0.3, -0.9, -0.9]
    for baseline in ("self", "group_loo"):
        batch = _batch(SPEC, GAPS, advantages)
        _run(batch, cti_baseline=baseline, ess_min=0.0, dead_zone=0.0)
        assert torch.equal(batch.extras["cti"][[1, 3, 5], 0], torch.zeros(3))
        assert bool(batch.extras["cti_valid"][[1, 3, 5], 0].all())
        group = _batch(SPEC, GAPS, advantages)                           # the whole group at turn 1 is not tied
        pillar = CounterfactualTokenImportance(align="turn_token", cti_baseline=baseline, ess_min=0.0, dead_zone=0.0)
        pillar.prepare(group)
        assert bool((group.extras["cti"][[1, 3, 5], 0] != 0).all())


def test_dead_zone_uses_the_state_groups_scale():
    advantages = [1.0, 1.0, 1.0 + 1e-7, 1.0 + 1e-7, 1.0, 1.0, -1.0, -1.0]
    batch = _batch(SPEC, GAPS, advantages)
    _run(batch, ess_min=0.0, dead_zone=0.0)
    assert bool((batch.extras["cti"][[1, 3, 5], 0] != 0).any())            # not a tie: about 1e-7 off
    _run(batch, ess_min=0.0, dead_zone=1e-6)
    assert torch.equal(batch.extras["cti"][[1, 3, 5], 0], torch.zeros(3))
    assert batch.extras["cti_phi"][[1, 3, 5], 0].tolist() == [0.0, 0.0, 0.0]


def _random_batch(seed, groups=3, size=5, turns=3, width=4, states=2):
    generator = torch.Generator().manual_seed(seed)
    spec = [(7 * g + 1, j, k, int(torch.randint(0, states, (1,), generator=generator)) + 100 * g + 10 * k)
            for g in range(groups) for j in range(size) for k in range(int(torch.randint(1, turns + 1, (1,),
                                                                                      generator=generator)))]
    rows = len(spec)
    batch = _batch(spec, torch.randn(rows, width, generator=generator) * 2, torch.randn(rows, generator=generator),
                   width)
    lengths = torch.randint(1, width + 1, (rows,), generator=generator)
    batch.response_mask = torch.arange(width)[None, :] < lengths[:, None]
    return batch


def test_group_grouping_is_bit_identical_to_the_default_pillar():
    for seed in range(3):
        for kwargs in ({}, {"align": "turn_token", "cti_baseline": "group_loo"}, {"align": "turn", "sibling_advantage": "row"}):
            first, second = _random_batch(seed), _random_batch(seed)
            default, grouped = CounterfactualTokenImportance(**kwargs), CounterfactualTokenImportance(grouping="group",
                                                                                                      **kwargs)
            default.prepare(first)
            grouped.prepare(second)
            for key, value in first.extras.items():
                other = second.extras[key]
                assert value.dtype == other.dtype and torch.equal(value, other), key
            assert default.metrics() == grouped.metrics() and "anchor_coverage" not in grouped.metrics()
            objective = Objective(kl_coef=0.0, distill_coef=0.01)
            logp = first.old_logp - 0.2
            credit = default.transform(objective.terms(first, logp, torch.zeros_like(logp)), first).credit
            other = grouped.transform(objective.terms(second, logp, torch.zeros_like(logp)), second).credit
            assert torch.equal(credit.view(torch.int32), other.view(torch.int32))


def test_anchor_equals_turn_token_group_when_every_turn_has_one_state():
    batch, grouped = _random_batch(4, states=1), _random_batch(4, states=1)   # one state per (group, turn)
    CounterfactualTokenImportance(grouping="anchor", align="turn_token", dead_zone=0.0).prepare(batch)
    CounterfactualTokenImportance(align="turn_token", dead_zone=0.0).prepare(grouped)
    for key in ("cti", "cti_valid", "cti_phi"):
        assert torch.allclose(batch.extras[key].double(), grouped.extras[key].double(), atol=1e-6), key


def test_invariant_to_row_permutation():
    for align, advantage in (("turn_token", "trajectory"), ("turn", "row")):
        batch = _random_batch(5)
        CounterfactualTokenImportance(grouping="anchor", align=align, sibling_advantage=advantage).prepare(batch)
        order = torch.randperm(batch.num_rows, generator=torch.Generator().manual_seed(1))
        shuffled = _random_batch(5).select(order)
        CounterfactualTokenImportance(grouping="anchor", align=align, sibling_advantage=advantage).prepare(shuffled)
        for key in ("cti", "cti_valid"):
            assert torch.equal(batch.extras[key][order], shuffled.extras[key]), key


def test_disabled_anchor_pillar_is_dropped_and_bad_settings_fail():
    assert canonical_order([CounterfactualTokenImportance(enabled=False, grouping="anchor", align="turn")]) == []
    with pytest.raises(ValueError, match="cti.grouping"):
        CounterfactualTokenImportance(grouping="state")
    with pytest.raises(ValueError, match="cti.align"):
        CounterfactualTokenImportance(grouping="anchor")                   # align defaults to flat
    batch = _batch(SPEC, GAPS, ADVANTAGES)
    batch.anchor_ids = None
    with pytest.raises(ValueError, match="anchor_ids"):
        CounterfactualTokenImportance(grouping="anchor", align="turn").prepare(batch)


def test_tabular_model_anchor_beats_group_on_sign_at_later_steps():
    mdp = default_mdp()
    truth = exact(mdp)
    harmed = truth.teacher_effect < 0
    harm_mass = float((truth.state_mass * harmed).sum(dim=1)[1:].min())     # the teacher-harmed state's mass
    assert harm_mass >= 0.25
    results = evaluate(mdp, groups=800, group_size=8, seed=0,
                       variants=[("group", "group_loo"), ("anchor", "group_loo"), ("anchor", "self")])
    group, anchor = results[("group", "group_loo")], results[("anchor", "group_loo")]
    later = range(1, mdp.horizon)
    for t in later:
        assert anchor.mass_correct_cti[t] >= group.mass_correct_cti[t]
        assert anchor.mass_correct_credit[t] >= group.mass_correct_credit[t]
    gain = sum(anchor.mass_correct_cti[t] - group.mass_correct_cti[t] for t in later) / len(later)
    assert gain >= harm_mass / 2
    # docs/methods.md#what-the-estimator-measures survives per-state grouping: with `self` and 0/1 rewards the sign follows -A on every token
    assert all(share == 1.0 for share in results[("anchor", "self")].follows_advantage)


def test_fallback_none_gives_no_distillation_to_tokens_without_same_state_siblings():
    batch = _batch(SPEC, GAPS, ADVANTAGES)
    _, gate_terms = _run(batch, ess_min=0.0, dead_zone=0.0)
    batch = _batch(SPEC, GAPS, ADVANTAGES)
    _, none_terms = _run(batch, ess_min=0.0, dead_zone=0.0, fallback="none")
    assert none_terms.credit[7, 0].item() == 0.0 and gate_terms.credit[7, 0].item() > 0.0   # alone in state 12
    assert torch.equal(none_terms.credit[:7], gate_terms.credit[:7])


def test_on_every_used_token_only_fallback_none_keeps_the_harmed_states_credit_negative():
    """The exact model's state 2 (the teacher harms there): with the gate fallback the tokens without same-state
    siblings keep pulling toward the teacher, and the state's mean credit over all its tokens turns positive."""
    drawn = sample(default_mdp(), groups=800, group_size=8, seed=0)
    for fallback, sign in (("gate", 1.0), ("none", -1.0)):
        right, coverage, harm = used_token_scores(drawn, ess_min=1.5, fallback=fallback)
        assert all(0.5 < c < 0.9 for c in coverage[1:])                  # some tokens fall back at t >= 1
        assert all(h * sign > 0 for h in harm[1:]), (fallback, harm)
    assert min(right[1:]) == pytest.approx(1.0)  # fallback none: the mean credit has the right sign on all the mass
