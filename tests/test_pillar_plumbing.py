"""The CreditPillar plumbing: canonical order, disabled = baseline bits, hooks called once per step."""

import itertools

import pytest
import torch

from craft_pl.loss import LossRecipe
from craft_pl.module import CraftModule
from craft_pl.objective import Objective
from craft_pl.pillars import STAGE_COEFFICIENTS, STAGE_CREDIT, STAGE_PENALTIES, CreditPillar, canonical_order
from craft_pl.model import Policy
from tests.test_sdar import _sdar_batch, _sdar_terms


class HalfCredit(CreditPillar):
    stage, name, requires_distillation = STAGE_CREDIT, "half_credit", True

    def transform(self, terms, batch):
        terms.credit = terms.gate * 0.5 - 0.25  # signed: can push tokens down
        return terms


class ScaleCoefficients(CreditPillar):
    stage, name = STAGE_COEFFICIENTS, "scale"

    def __init__(self, enabled: bool = True):
        super().__init__(enabled)
        self.updates = []

    def transform(self, terms, batch):
        terms.coefficients = dict(terms.coefficients, distill=terms.coefficients["distill"] * 3.0)
        return terms

    def update(self, stats):
        self.updates.append(stats)

    def state_dict(self):
        return {"updates": len(self.updates)}


class CreditPenalty(CreditPillar):
    stage, name = STAGE_PENALTIES, "credit_penalty"

    def transform(self, terms, batch):
        # depends on the credit set by the credit stage: order matters, the canonical order fixes it
        weight = terms.credit if terms.credit is not None else terms.gate
        terms.penalties["credit_penalty"] = weight * terms.logp
        terms.coefficients = dict(terms.coefficients, credit_penalty=0.1)
        return terms


def _loss_and_grad(pillars):
    objective = Objective(distill_coef=0.01)
    batch, logp = _sdar_batch(objective)
    loss = LossRecipe(objective, pillars).loss(batch, logp, torch.zeros(2, 3)).loss
    loss.backward()
    return loss.detach(), logp.grad.clone()


def test_list_order_never_changes_a_bit():
    results = [_loss_and_grad(list(order)) for order in
               itertools.permutations([CreditPenalty(), ScaleCoefficients(), HalfCredit()])]
    baseline_loss, baseline_grad = _loss_and_grad([])
    for loss, grad in results:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])
    assert not torch.equal(results[0][0], baseline_loss)


def test_disabled_pillars_leave_loss_and_gradient_bit_identical():
    baseline_loss, baseline_grad = _loss_and_grad([])
    loss, grad = _loss_and_grad([HalfCredit(enabled=False), ScaleCoefficients(enabled=False),
                                 CreditPenalty(enabled=False)])
    assert loss.view(torch.int32).item() == baseline_loss.view(torch.int32).item()
    assert torch.equal(grad, baseline_grad)


def test_negative_credit_pushes_the_sampled_token_down():
    objective = Objective(pg_coef=0.0, entropy_coef=0.0, kl_coef=0.0, distill_coef=1.0, gate_beta=5.0)
    _, logp, terms = _sdar_terms(objective, teacher=(-3.0, -3.0, -3.0))  # teacher rejects: gate ~ 0
    terms = HalfCredit().transform(terms, None)
    objective.compose(terms)[0].backward()
    assert (logp.grad[0] > 0).all()  # descent lowers logp


def test_duplicate_pillars_are_refused():
    with pytest.raises(ValueError, match="more than once"):
        canonical_order([HalfCredit(), HalfCredit()])


def test_module_keeps_only_enabled_pillars_in_canonical_order_and_checks_the_teacher():
    module = CraftModule(Policy(), Objective(distill_coef=0.01),
                         pillars=[CreditPenalty(), ScaleCoefficients(enabled=False), HalfCredit()])
    assert [p.name for p in module.loss_recipe.active_pillars] == ["half_credit", "credit_penalty"]
    with pytest.raises(ValueError, match="distill_coef"):
        CraftModule(Policy(), Objective(distill_coef=0.0), pillars=[HalfCredit()])
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert set(checkpoint["craft_pillars"]) == {"credit_penalty", "scale", "half_credit"}


def test_code_defaults_are_crafts():
    module = CraftModule(Policy())
    assert [p.name for p in module.loss_recipe.active_pillars] == ["cti", "controller", "polar_kl"]
    assert module.objective.distill_coef == 0.01 and module.objective.gate_beta == 5.0
    assert CraftModule(Policy(), pillars=[]).loss_recipe.active_pillars == []
