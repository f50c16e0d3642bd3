"""Logit-level distillation: hand values of the KL, a gradient that reaches the token the student never sampled
(which SDAR's sampled-token term cannot), its weights, and the full distributions it needs from the rollout."""

import math

import pytest
import torch

from craft_pl.loss import LossRecipe
from craft_pl.model.logprobs import ResponseScores
from craft_pl.objective import Objective
from craft_pl.pillars.cti import CounterfactualTokenImportance
from craft_pl.pillars.logit_distill import TEACHER_LOG_PROBS, LogitDistillation, full_kl
from tests.test_objective import _batch


def test_full_kl_by_hand():
    teacher = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    student = torch.log(torch.tensor([[[0.25, 0.5, 0.25]]]))
    forward = 0.5 * math.log(2) + 0.25 * math.log(0.5)   # sum p_T log(p_T / p_S)
    reverse = 0.25 * math.log(0.5) + 0.5 * math.log(2)
    assert full_kl(teacher, student, "forward").item() == pytest.approx(forward)
    assert full_kl(teacher, student, "reverse").item() == pytest.approx(reverse)
    assert full_kl(teacher, teacher, "forward").item() == 0.0
    padded = torch.zeros(1, 1, 3)
    assert full_kl(padded, padded, "forward").item() == 0.0 and full_kl(padded, padded, "reverse").item() == 0.0


def _three_token_batch(teacher_probs):
    """Two rows x 3 positions over a 4-token vocabulary; every response samples token 0, which the student likes;
    the teacher prefers token 3, which the student never sampled."""
    batch = _batch()
    student_logits = torch.tensor([2.0, 0.0, 0.0, -1.0]).expand(2, 3, 4).clone().requires_grad_(True)
    teacher = torch.log(torch.tensor(teacher_probs)).expand(2, 3, 4).clone()
    batch.extras[TEACHER_LOG_PROBS] = teacher
    batch.teacher_logp = teacher[..., 0]
    log_probs = torch.log_softmax(student_logits, -1)
    scores = ResponseScores(logp=log_probs[..., 0], log_probs=log_probs)
    return batch, student_logits, scores


def _logit_gradient(pillars, objective):
    batch, logits, scores = _three_token_batch([0.1, 0.1, 0.1, 0.7])
    recipe = LossRecipe(objective, pillars)
    recipe.prepare(batch)
    result = recipe.loss(batch, scores.logp, torch.zeros(2, 3), logits=scores)
    result.loss.backward()
    return logits.grad, result


def test_the_logit_term_raises_the_teachers_untried_token_and_the_sampled_term_cannot():
    objective = Objective(pg_coef=0.0, entropy_coef=0.0, kl_coef=0.0, distill_coef=1.0, gate_beta=5.0)
    sampled, _ = _logit_gradient([], objective)
    logit, result = _logit_gradient([LogitDistillation()], objective)
    # gradient descent: a negative gradient raises a logit
    assert (sampled[0, 0, 3] > 0).item()          # SDAR's term only raises the sampled token 0: token 3 goes down
    assert (logit[0, 0, 3] < 0).item()            # forward KL: (p_S - p_T) * g < 0 where the teacher likes it
    assert (logit[0, 0, 0] > 0).item()            # and the over-liked sampled token goes down
    assert result.terms.coefficients["distill"] == 0.0 and result.terms.coefficients["logit_distill"] == 1.0
    assert "train/logit_distill_loss" in result.metrics


def test_the_weight_is_the_gate_or_the_non_negative_credit():
    batch, _, scores = _three_token_batch([0.1, 0.1, 0.1, 0.7])
    objective = Objective(distill_coef=0.5)
    recipe = LossRecipe(objective, [LogitDistillation(direction="reverse", replace_sampled=False)])
    recipe.prepare(batch)
    terms = recipe.loss(batch, scores.logp, torch.zeros(2, 3), logits=scores).terms
    kl = full_kl(batch.extras[TEACHER_LOG_PROBS], scores.log_probs, "reverse")
    assert torch.equal(terms.penalties["logit_distill"], terms.gate * kl)
    assert terms.coefficients["distill"] == 0.5 and terms.coefficients["logit_distill"] == 0.5
    signed = LogitDistillation()
    terms.credit = torch.tensor([[0.5, -0.5, 0.0], [1.0, -1.0, 0.2]])
    out = signed.transform(terms, batch)
    assert torch.equal(out.penalties["logit_distill"], terms.credit.clamp_min(0) * full_kl(
        batch.extras[TEACHER_LOG_PROBS], scores.log_probs, "forward"))


def test_the_recipe_asks_for_whole_distributions_only_with_the_pillar_on():
    objective = Objective()
    assert not LossRecipe(objective, [CounterfactualTokenImportance()]).needs_full_distribution
    assert not LossRecipe(objective, [LogitDistillation(enabled=False)]).needs_full_distribution
    assert LossRecipe(objective, [LogitDistillation()]).needs_full_distribution
    with pytest.raises(ValueError, match="distill_coef"):
        LossRecipe(Objective(distill_coef=0.0), [LogitDistillation()])
    with pytest.raises(ValueError, match="direction"):
        LogitDistillation(direction="both")


def test_without_scored_distributions_the_error_names_the_fix():
    batch, _, scores = _three_token_batch([0.25, 0.25, 0.25, 0.25])
    del batch.extras[TEACHER_LOG_PROBS]
    recipe = LossRecipe(Objective(), [LogitDistillation()])
    recipe.prepare(batch)
    with pytest.raises(ValueError, match="whole next-token distributions"):
        recipe.loss(batch, scores.logp, torch.zeros(2, 3), logits=scores)


def test_the_policy_scores_whole_distributions_consistent_with_the_sampled_log_probs(tiny_policy):
    prompts, responses = [[5, 6, 7], [5, 6, 7], [8, 9]], [[10, 11], [12], [13, 14]]
    scores, mask = tiny_policy.token_scores(prompts, responses, full_distribution=True)
    plain, _ = tiny_policy.token_scores(prompts, responses)
    assert scores.log_probs.shape[:2] == (3, 2) and scores.log_probs.shape[2] > 14
    picked = scores.log_probs.gather(-1, torch.tensor([[10, 11], [12, 0], [13, 14]]).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(picked[mask], scores.logp[mask]) and torch.equal(scores.logp, plain.logp)
    assert torch.allclose(scores.log_probs[mask].exp().sum(-1), torch.ones(int(mask.sum())))
    assert torch.equal(scores.log_probs[~mask], torch.zeros(int((~mask).sum()), scores.log_probs.shape[-1]))
