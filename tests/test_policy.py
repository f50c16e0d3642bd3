"""Policy building: tokenizer, tiny model, reference = adapter disabled, warm-start cache, bad paths."""

import pytest
import torch

from craft_pl.model import Policy
from craft_pl.model.warm_start import WarmStart
from tests.conftest import TINY, toy_corpus


def test_built_in_tokenizer_and_model_are_deterministic():
    first, second = Policy(tiny=TINY), Policy(tiny=TINY)
    first.build(toy_corpus(), None, seed=5)
    second.build(toy_corpus(), None, seed=5)
    assert first.tokenizer.get_vocab() == second.tokenizer.get_vocab()
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    for special in ["<think>", "</think>", "<action>", "</action>"]:
        assert len(first.tokenizer(special, add_special_tokens=False).input_ids) == 1


def test_reference_logprobs_do_not_move_when_the_adapter_trains(tiny_policy):
    prompts = [tiny_policy.encode_prompt("Task: choose apple\n")] * 2
    responses = [tiny_policy.encode_response("<think>ok</think><action>apple</action>")] * 2
    ref_before, _, _ = tiny_policy.token_logprobs(prompts, responses, "reference")
    pol_before, _, _ = tiny_policy.token_logprobs(prompts, responses, "policy")
    optimizer = torch.optim.AdamW(tiny_policy.trainable_parameters(), lr=1e-2)
    for _ in range(3):
        logp, _, mask = tiny_policy.token_logprobs(prompts, responses, "policy")
        (-(logp * mask).sum()).backward()
        optimizer.step()
        optimizer.zero_grad()
    ref_after, _, _ = tiny_policy.token_logprobs(prompts, responses, "reference")
    pol_after, _, _ = tiny_policy.token_logprobs(prompts, responses, "policy")
    assert torch.equal(ref_before, ref_after)
    assert not torch.equal(pol_before, pol_after)
    assert all(name.count("lora") for name, p in tiny_policy.model.named_parameters() if p.requires_grad)


def test_full_finetune_keeps_a_frozen_reference_copy():
    policy = Policy(tiny=TINY, finetune="full")
    policy.build(toy_corpus(), None, seed=0)
    assert policy.reference is not None
    assert not any(p.requires_grad for p in policy.reference.parameters())
    assert all(p.requires_grad for p in policy.model.parameters())


def test_warm_start_cache_gives_bit_identical_weights(tmp_path):
    demos = [(text.split("<think>")[0], "<think>ok</think>" + text.split("</think>")[1]) for text in toy_corpus()]
    settings = WarmStart(num_demos=10, steps=5, batch_size=4, lr=1e-3, cache_dir=str(tmp_path))
    uncached = Policy(tiny=TINY, warm_start=settings)
    uncached.build(toy_corpus(), demos, seed=1)
    assert len(list((tmp_path / "warm_start").glob("*.pt"))) == 1
    rng_after_uncached = torch.random.get_rng_state()
    cached = Policy(tiny=TINY, warm_start=settings)
    cached.build(toy_corpus(), demos, seed=1)
    assert torch.equal(rng_after_uncached, torch.random.get_rng_state())
    for a, b in zip(uncached.model.state_dict().values(), cached.model.state_dict().values()):
        assert torch.equal(a, b)
    assert cached.warm_start_losses == uncached.warm_start_losses
    assert uncached.warm_start_losses[-1] < uncached.warm_start_losses[0]


def test_missing_local_model_path_fails_before_loading():
    with pytest.raises(ValueError, match="does not exist"):
        Policy(model="./no/such/model")


def test_logprobs_can_be_padded_to_the_step_width(tiny_policy):
    prompts = [tiny_policy.encode_prompt("Task: choose apple\n")] * 2
    responses = [[5, 6], [7]]
    logp, entropy, mask = tiny_policy.token_logprobs(prompts, responses, with_entropy=True, width=6)
    assert logp.shape == entropy.shape == mask.shape == (2, 6)
    assert mask.sum().item() == 3 and torch.equal(logp[~mask], torch.zeros(9))
    narrow, _, _ = tiny_policy.token_logprobs(prompts, responses)
    assert torch.equal(narrow, logp[:, :2])
    with pytest.raises(ValueError, match="shorter"):
        tiny_policy.token_logprobs(prompts, responses, width=1)
