"""With entropy_coef 0 the update detaches the entropy (no backward through it); loss and gradients keep their bits."""

import torch

from craft_pl.objective import Objective
from tests.test_objective import _batch


def _loss_and_grad(detach: bool):
    batch = _batch()
    objective = Objective(entropy_coef=0.0, distill_coef=0.0)
    objective.prepare(batch)
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0), requires_grad=True)
    log_probs = torch.log_softmax(logits, dim=-1)
    logp = log_probs[..., 0]
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    terms = objective.terms(batch, logp, entropy.detach() if detach else entropy)
    loss, _ = objective.compose(terms)
    loss.backward()
    return loss.detach(), logits.grad


def test_detaching_a_zero_weighted_entropy_changes_no_bit():
    loss, grad = _loss_and_grad(detach=False)
    detached_loss, detached_grad = _loss_and_grad(detach=True)
    assert loss.view(torch.int32).item() == detached_loss.view(torch.int32).item()
    assert torch.equal(grad, detached_grad)
