"""The guarantee: every subset of pillars switched off (omitted or ``enabled: false``) is bit-identical in loss,
gradients, post-step parameters and optimizer state; all off equals SDAR; each pillar on changes the loss. Every
loss here comes from ``craft_pl.loss.LossRecipe``, the object ``CraftModule.training_step`` calls."""

import copy
import itertools

import pytest
import torch

from craft_pl.rollout.collector import Collector
from craft_pl.rollout.experience import rows_from_trajectories, score_logprobs, score_teacher, with_privileged_contexts
from craft_pl.loss import LossRecipe
from craft_pl.objective import Objective, k3_kl
from craft_pl.pillars.controller import AsymmetricController
from craft_pl.pillars.cringe import AdaptiveCringe
from craft_pl.pillars.cti import CounterfactualTokenImportance
from craft_pl.pillars.logit_distill import LogitDistillation
from craft_pl.pillars.polar_kl import PolarisedKL, forward_kl_surrogate
from craft_pl.rollout.engine import HFEngine, SamplingParams
from tests.toy_env import PickWordEnv

NAMES = ("cti", "controller", "polar_kl", "cringe", "logit_distill")


def make(name, enabled=True):
    if name == "cti":
        return CounterfactualTokenImportance(enabled=enabled)
    if name == "controller":
        controller = AsymmetricController(enabled=enabled, target=0.2)
        controller.state.update(distill=0.03, kl=0.004, base={"distill": 0.01, "kl": 0.01})  # as after updates
        return controller
    if name == "cringe":
        return AdaptiveCringe(enabled=enabled, top_k=2)
    if name == "logit_distill":
        return LogitDistillation(enabled=enabled)
    return PolarisedKL(enabled=enabled)


@pytest.fixture(scope="module")
def scored(request):
    from tests.conftest import TINY, toy_corpus
    from craft_pl.model import Policy

    torch.use_deterministic_algorithms(True)
    policy = Policy(tiny=TINY)
    policy.build(toy_corpus(), None, seed=3)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the adapter off zero so the policy differs from the reference
        for parameter in policy.trainable_parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    env = PickWordEnv(max_turns=2)
    collector = Collector(lambda: PickWordEnv(max_turns=2), history_length=2)
    tasks = env.task_panel("train", 3, 0)
    trajectories = collector.run(tasks, 4, policy, HFEngine(), SamplingParams(1.0, 1.0, 10),
                                            torch.Generator().manual_seed(0))
    for trajectory, reward in zip(trajectories, itertools.cycle([10.0, 0.0, 0.0, 10.0, 0.0])):
        trajectory.episode_reward = reward  # a mix of outcomes in every group
    batch, texts = rows_from_trajectories(trajectories, 0.1)
    score_logprobs(policy, batch, True, 64)
    score_teacher(policy, batch, with_privileged_contexts(texts, tasks, env), 24, 64, full_distribution=True)
    batch.num_tokens = int(batch.response_mask.sum())
    return policy, batch


def one_update(scored, pillars):
    """One optimizer step of the baseline objective with these pillars; returns every observable."""
    policy, batch = scored
    policy = copy.deepcopy(policy)
    batch = copy.deepcopy(batch)
    recipe = LossRecipe(Objective(distill_coef=0.01, gate_beta=5.0, kl_coef=0.01), pillars)
    recipe.prepare(batch)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2)
    scores, _ = policy.token_scores(batch.prompt_ids, batch.response_ids, with_entropy=True,
                                    top_k=recipe.logits_top_k, width=batch.response_mask.shape[1],
                                    full_distribution=recipe.needs_full_distribution)
    loss = recipe.loss(batch, scores.logp, scores.entropy, logits=scores).loss
    loss.backward()
    grads = [p.grad.clone() for p in policy.trainable_parameters()]
    optimizer.step()
    params = [p.detach().clone() for p in policy.trainable_parameters()]
    moments = [s["exp_avg"].clone() for s in optimizer.state.values()]
    return loss.detach(), grads, params, moments


def assert_bit_identical(a, b):
    assert a[0].view(torch.int32).item() == b[0].view(torch.int32).item()
    for group_a, group_b in zip(a[1:], b[1:]):
        assert len(group_a) == len(group_b)
        assert all(torch.equal(x, y) for x, y in zip(group_a, group_b))


@pytest.mark.parametrize("off", [set(s) for r in range(len(NAMES) + 1) for s in itertools.combinations(NAMES, r)],
                         ids=lambda s: "off=" + ("+".join(sorted(s)) or "none"))
def test_switched_off_pillars_change_no_bit(scored, off):
    on = [n for n in NAMES if n not in off]
    omitted = one_update(scored, [make(n) for n in on])
    disabled = one_update(scored, [make(n, enabled=n not in off) for n in NAMES])
    assert_bit_identical(omitted, disabled)


def test_all_pillars_off_is_sdar(scored):
    assert_bit_identical(one_update(scored, []), one_update(scored, [make(n, enabled=False) for n in NAMES]))


@pytest.mark.parametrize("name", NAMES)
def test_each_pillar_on_changes_the_loss(scored, name):
    baseline = one_update(scored, [])
    with_pillar = one_update(scored, [make(name)])
    assert with_pillar[0].item() != baseline[0].item()


def test_forward_branch_has_finite_gradients_for_large_log_ratios():
    logp = torch.linspace(-50, 50, 101, requires_grad=True)
    forward_kl_surrogate(logp, torch.zeros(101)).sum().backward()
    assert torch.isfinite(logp.grad).all()


def test_controller_moves_coefficients_in_opposite_directions_and_monotonically():
    def after(activity):
        controller = AsymmetricController(target=0.3)
        controller.state["base"] = {"distill": 0.01, "kl": 0.01}
        controller.update({"distill/gate_active_ratio": activity})
        return controller.state["distill"], controller.state["kl"]

    values = [after(a) for a in (0.1, 0.2, 0.3, 0.4, 0.5)]
    distill, kl = zip(*values)
    assert list(distill) == sorted(distill) and list(kl) == sorted(kl, reverse=True)
    assert values[2] == (0.01, 0.01)  # at the target nothing moves
    assert max(distill) <= 0.04 and min(kl) >= 0.0025  # bounded by B = 4


def test_controller_state_survives_a_checkpoint():
    controller = AsymmetricController(warmup_steps=2)
    controller.state["base"] = {"distill": 0.01, "kl": 0.01}
    for activity in (0.2, 0.4, 0.6):
        controller.update({"distill/gate_active_ratio": activity})
    restored = AsymmetricController(warmup_steps=2)
    restored.load_state_dict(controller.state_dict())
    assert restored.state == controller.state and restored.metrics() == controller.metrics()


def test_cringe_pushes_rejected_tokens_below_the_pseudo_positive_and_keeps_sdar_elsewhere(scored):
    policy, batch = scored
    batch = copy.deepcopy(batch)
    objective = Objective(pg_coef=0.0, entropy_coef=0.0, kl_coef=0.0, distill_coef=1.0, gate_beta=5.0)
    pillar = AdaptiveCringe(top_k=1)
    recipe = LossRecipe(objective, [pillar])
    recipe.prepare(batch)
    scores, _ = policy.token_scores(batch.prompt_ids, batch.response_ids, top_k=1, width=batch.response_mask.shape[1])
    result = recipe.loss(batch, scores.logp, torch.zeros_like(scores.logp), logits=scores)
    terms, loss, parts = result.terms, result.loss, result.metrics
    gate = torch.sigmoid(5.0 * (batch.teacher_logp - scores.logp.detach()))  # SDAR's gate, which CRINGE keeps
    assert torch.equal(terms.gate, gate)
    rejected = (gate < 0.5) & terms.mask
    assert rejected.any() and ((gate >= 0.5) & terms.mask).any()
    expected = torch.nn.functional.softplus(scores.sampled_logit - scores.top_logits[..., 0])
    assert torch.equal(terms.penalties["cringe"][rejected], expected[rejected])
    assert torch.equal(terms.penalties["cringe"][~rejected], torch.zeros(int((~rejected).sum())))
    assert torch.equal(terms.credit[~rejected & terms.mask], gate[~rejected & terms.mask])
    assert terms.coefficients["cringe"] == terms.coefficients["distill"]
    grad_logit = torch.autograd.grad(loss, scores.sampled_logit, retain_graph=True)[0]
    assert (grad_logit[rejected] > 0).all()  # descent lowers the rejected token's logit
    assert "train/cringe_loss" in parts and pillar.metrics()["negative_fraction"] > 0


def test_cringe_samples_with_its_own_generator_only():
    pillar = AdaptiveCringe(top_k=3)
    pillar.generator = torch.Generator().manual_seed(0)
    state = torch.random.get_rng_state()
    top = torch.tensor([[[3.0, 2.0, 1.0]] * 4])
    first = pillar._pseudo_positive(top)
    assert torch.equal(state, torch.random.get_rng_state())
    pillar.generator = torch.Generator().manual_seed(0)
    assert torch.equal(first, pillar._pseudo_positive(top))
    assert set(first.flatten().tolist()) <= {3.0, 2.0, 1.0}


def test_variant_b_polarises_the_distillation_term_instead_of_the_kl(scored):
    reference = one_update(scored, [])
    variant_b = one_update(scored, [PolarisedKL(target="distill")])
    assert variant_b[0].item() != reference[0].item()
    policy, batch = scored
    batch = copy.deepcopy(batch)
    recipe = LossRecipe(Objective(distill_coef=0.01, kl_coef=0.01), [PolarisedKL(target="distill")])
    recipe.prepare(batch)
    logp, entropy, _ = policy.token_logprobs(batch.prompt_ids, batch.response_ids, with_entropy=True,
                                             width=batch.response_mask.shape[1])
    terms = recipe.loss(batch, logp, entropy).terms
    kl_before, gate = k3_kl(logp, batch.ref_logp), terms.gate
    negative = (2 * gate - 1 < 0) & terms.mask
    assert negative.any() and torch.equal(terms.kl, kl_before)
    assert torch.equal(terms.credit[negative], torch.zeros(int(negative.sum())))
    assert (terms.penalties["polar_distill"][negative] >= 0).all()  # -rho * logp with logp <= 0


def test_cringe_generator_state_survives_a_checkpoint():
    pillar = AdaptiveCringe(top_k=3)
    pillar.generator = torch.Generator().manual_seed(5)
    top = torch.tensor([[[3.0, 2.0, 1.0]] * 16])
    pillar._pseudo_positive(top)
    restored = AdaptiveCringe(top_k=3)
    restored.load_state_dict(pillar.state_dict())
    assert torch.equal(pillar._pseudo_positive(top), restored._pseudo_positive(top))
