"""Scoring: the LM head only at the response positions and shared prompts run once, each checked against the plain
computation (logits at every position, one padded forward) written here."""

import pytest
import torch
import torch.nn.functional as F

from craft_pl.model.logprobs import pad_pairs, response_scores, shared_prompt_scores


def _prompts(policy):
    texts = ["Task: choose apple\n", "Task: choose frost\nObservation: options: apple brick cloud delta ember\n" * 3,
             "Task:", "Task: choose grape\nObservation: options: heron\n"]
    return [policy.encode_prompt(t) for t in texts]


def plain_response_scores(model, batch, with_entropy=False, top_k=0):
    """The plain computation: logits at every position, then the response columns."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                   use_cache=False).logits
    width = batch.response_ids.shape[1]
    logits = logits[:, batch.prompt_width - 1 : batch.prompt_width - 1 + width].float()
    log_probs = F.log_softmax(logits, dim=-1)
    mask = batch.response_mask
    logp = log_probs.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
    out = {"logp": torch.where(mask, logp, torch.zeros_like(logp))}
    if with_entropy:
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        out["entropy"] = torch.where(mask, entropy, torch.zeros_like(entropy))
    if top_k:
        sampled = logits.gather(-1, batch.response_ids.unsqueeze(-1)).squeeze(-1)
        out["sampled_logit"] = torch.where(mask, sampled, torch.zeros_like(sampled))
        top_logits, top_ids = logits.scatter(-1, batch.response_ids.unsqueeze(-1), float("-inf")).topk(top_k, dim=-1)
        out["top_logits"] = torch.where(mask.unsqueeze(-1), top_logits, torch.zeros_like(top_logits))
        out["top_ids"] = torch.where(mask.unsqueeze(-1), top_ids, torch.zeros_like(top_ids))
    return out


def _pairs(policy):
    prompts = [p for p in _prompts(policy) for _ in range(3)]
    words = ["apple", "brick brick", "frost", "a", "apple frost apple", "b", "c", "dd", "apple", "", "heron", "e"]
    return prompts, [policy.encode_response(w) for w in words]


def _perturb(policy):
    with torch.no_grad():
        generator = torch.Generator().manual_seed(5)
        for parameter in policy.trainable_parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)


@pytest.mark.parametrize("which", ["policy", "reference"])
def test_scoring_only_the_response_positions_changes_no_bit(tiny_policy, which):
    _perturb(tiny_policy)
    prompts, responses = _pairs(tiny_policy)
    batch = pad_pairs(prompts, responses, tiny_policy.tokenizer.pad_token_id)
    with torch.no_grad(), tiny_policy.use(which) as model:
        new = response_scores(model, batch, with_entropy=True, top_k=3)
        old = plain_response_scores(model, batch, with_entropy=True, top_k=3)
    for name, value in old.items():
        assert torch.equal(getattr(new, name), value), name


def test_shared_prompt_scores_equal_one_padded_forward_and_their_gradients_too(tiny_policy):
    _perturb(tiny_policy)
    prompts, responses = _pairs(tiny_policy)
    model, pad = tiny_policy.model, tiny_policy.tokenizer.pad_token_id
    results = []
    for score in (lambda: response_scores(model, pad_pairs(prompts, responses, pad), True, 2),
                  lambda: shared_prompt_scores(model, prompts, responses, pad, True, 2)):
        model.zero_grad(set_to_none=True)
        scores = score()
        (scores.logp.sum() + 0.1 * scores.entropy.sum() + 0.01 * scores.top_logits.sum()).backward()
        results.append((scores, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (plain, plain_grads), (shared, shared_grads) = results
    for name in ("logp", "entropy", "sampled_logit", "top_logits"):
        torch.testing.assert_close(getattr(shared, name), getattr(plain, name), atol=1e-6, rtol=1e-5)
    assert torch.equal(shared.top_ids, plain.top_ids) and plain_grads.keys() == shared_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-6, rtol=1e-5)


def _one_padded_forward(policy, prompts, responses):
    """Log-probs, entropy and mask ``[rows, R]`` of every pair from one padded forward of the policy."""
    batch = pad_pairs(prompts, responses, policy.tokenizer.pad_token_id)
    with torch.no_grad(), policy.use("policy") as model:
        scores = response_scores(model, batch, with_entropy=True)
    return scores.logp, scores.entropy, batch.response_mask


def test_token_scores_sorted_micro_batches_come_back_in_row_order(tiny_policy):
    _perturb(tiny_policy)
    prompts, responses = _pairs(tiny_policy)
    whole, entropy, mask = _one_padded_forward(tiny_policy, prompts, responses)
    with torch.no_grad():
        chunked, chunked_entropy, chunked_mask = tiny_policy.token_logprobs(
            prompts, responses, with_entropy=True, micro_batch_size=4, width=whole.shape[1] + 2)
    assert torch.equal(chunked_mask[:, : whole.shape[1]], mask) and not chunked_mask[:, whole.shape[1]:].any()
    torch.testing.assert_close(chunked[:, : whole.shape[1]], whole, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(chunked_entropy[:, : whole.shape[1]], entropy, atol=1e-6, rtol=1e-5)


def test_shared_scoring_falls_back_under_activation_checkpointing():
    from craft_pl.model import Policy
    from tests.conftest import TINY, toy_corpus

    policy = Policy(tiny=TINY, gradient_checkpointing=True)
    policy.build(toy_corpus(), None, seed=0)
    _perturb(policy)
    prompts, responses = _pairs(policy)
    policy.model.train()
    logp, _, _ = policy.token_logprobs(prompts, responses)  # grad enabled: the layers would keep no cache
    expected, _, _ = _one_padded_forward(policy, prompts, responses)
    torch.testing.assert_close(logp.detach(), expected, atol=1e-6, rtol=1e-5)
    assert logp.requires_grad
