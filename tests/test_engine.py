"""The batched engine: sampling log-probs, left padding, explicit RNG, stop tags."""

import torch

from craft_pl.rollout.engine import HFEngine, SamplingParams
from craft_pl.rollout.sampling import sample_rows
from craft_pl.model.logprobs import pad_pairs, response_logprobs


def _prompts(policy):
    texts = ["Task: choose apple\n", "Task: choose frost\nObservation: options: apple brick\n", "Task:"]
    return [policy.encode_prompt(t) for t in texts] * 3


def test_sampling_logprobs_match_a_full_forward_at_temperature_one(tiny_policy):
    prompts = _prompts(tiny_policy)
    out = HFEngine().generate(tiny_policy.model, tiny_policy.tokenizer, prompts, SamplingParams(1.0, 1.0, 16),
                              torch.Generator().manual_seed(1))
    logp, _ = response_logprobs(tiny_policy.model, pad_pairs(prompts, [g.token_ids for g in out],
                                                             tiny_policy.tokenizer.pad_token_id))
    for row, generation in enumerate(out):
        assert len(generation.token_ids) == len(generation.logprobs) >= 1
        assert torch.allclose(logp[row, : len(generation.token_ids)], torch.tensor(generation.logprobs), atol=1e-5)


def test_batched_greedy_equals_one_prompt_at_a_time(tiny_policy):
    prompts = _prompts(tiny_policy)
    engine, greedy = HFEngine(), SamplingParams(0.0, 1.0, 12)
    batched = engine.generate(tiny_policy.model, tiny_policy.tokenizer, prompts, greedy, torch.Generator())
    for prompt, generation in zip(prompts, batched):
        alone = engine.generate(tiny_policy.model, tiny_policy.tokenizer, [prompt], greedy, torch.Generator())[0]
        assert alone.token_ids == generation.token_ids


def test_same_generator_seed_same_samples_and_global_rng_untouched(tiny_policy):
    prompts = _prompts(tiny_policy)
    engine, sampling = HFEngine(max_batch_size=4), SamplingParams(1.0, 0.9, 10)
    state = torch.random.get_rng_state()
    first = engine.generate(tiny_policy.model, tiny_policy.tokenizer, prompts, sampling, torch.Generator().manual_seed(3))
    second = engine.generate(tiny_policy.model, tiny_policy.tokenizer, prompts, sampling, torch.Generator().manual_seed(3))
    assert [g.token_ids for g in first] == [g.token_ids for g in second]
    assert torch.equal(state, torch.random.get_rng_state())


def test_generation_stops_at_the_action_tag(tiny_policy):
    tokenizer = tiny_policy.tokenizer
    stop = tokenizer.convert_tokens_to_ids("</action>")

    class AlwaysStop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, cache=None, **kwargs):
            logits = torch.full((input_ids.shape[0], input_ids.shape[1], len(tokenizer)), -1e9)
            logits[..., stop] = 0.0
            return type("Out", (), {"logits": logits, "cache": None})()

    out = HFEngine().generate(AlwaysStop(), tokenizer, [[1, 2, 3]], SamplingParams(1.0, 1.0, 20), torch.Generator())
    assert out[0].token_ids == [stop] and out[0].finished


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    generator = torch.Generator().manual_seed(0)
    one_row = torch.tensor([0])
    drawn = {int(sample_rows(logits, one_row, 1, SamplingParams(1.0, 0.7, 1), generator)[0]) for _ in range(200)}
    assert drawn == {0, 1}
    token, logp = sample_rows(logits, one_row, 1, SamplingParams(1.0, 0.7, 1), generator)
    expected = {0: 0.5 / 0.8, 1: 0.3 / 0.8}[token.item()]  # renormalised over the nucleus
    assert abs(logp.exp().item() - expected) < 1e-5
