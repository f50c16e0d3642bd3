"""The faster engine and scoring: shared prefills, finished rows leaving the batch, stop strings on ids, scoring
only the response positions, shared prompts in scoring; each checked against the previous computation."""

import pytest
import torch
import torch.nn.functional as F

from craft_pl.model.logprobs import pad_pairs, response_scores, shared_prompt_scores
from craft_pl.rollout.engine import HFEngine, SamplingParams, StopMatcher, sample_next, sample_rows


class ScriptedModel(torch.nn.Module):
    """Emits ``script[p]`` as the token at position ``p`` (``filler`` elsewhere), whatever the batch; keeps no cache.
    Records the rows of every forward."""

    def __init__(self, vocab: int, script: dict[int, int], filler: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.table = torch.full((4096,), filler, dtype=torch.long)
        for position, token in script.items():
            self.table[position] = token
        self.vocab, self.calls = vocab, []

    def forward(self, input_ids, position_ids, cache=None, **kwargs):
        self.calls.append(tuple(input_ids.shape))
        token = self.table[position_ids[:, -1] + 1]
        logits = torch.full((input_ids.shape[0], 1, self.vocab), -1e4)
        logits[torch.arange(input_ids.shape[0]), 0, token] = 0.0
        return type("Out", (), {"logits": logits, "cache": None})()


def _generate(engine, model, tokenizer, prompts, stops, tokens=12, seed=0):
    return engine.generate(model, tokenizer, prompts, SamplingParams(1.0, 1.0, tokens),
                           torch.Generator().manual_seed(seed), stops)


@pytest.mark.parametrize("share_prefill", [True, False])
def test_multi_token_stop_in_its_own_ids_and_spelled_otherwise(tiny_policy, share_prefill):
    tokenizer = tiny_policy.tokenizer
    canonical = tokenizer("</foo>", add_special_tokens=False).input_ids
    spelled = [tokenizer.convert_tokens_to_ids(c) for c in "</foo>"]
    assert len(canonical) > 1 and spelled != canonical  # a multi-token stop, and a second way to write it
    filler = tokenizer.convert_tokens_to_ids("a")
    for ids in (canonical, spelled):
        prompt = [5, 7, 9]  # positions 0..2; the response starts at position 3
        model = ScriptedModel(len(tokenizer), {3 + k: t for k, t in enumerate([filler, filler] + ids)}, filler)
        out = _generate(HFEngine(share_prefill=share_prefill), model, tokenizer, [prompt], ["</foo>"])[0]
        assert out.token_ids == [filler, filler] + ids and out.finished
        assert tokenizer.decode(out.token_ids).endswith("</foo>")


@pytest.mark.parametrize("share_prefill", [True, False])
def test_single_token_stop_eos_and_the_length_limit(tiny_policy, share_prefill):
    tokenizer = tiny_policy.tokenizer
    action_end, eos = tokenizer.convert_tokens_to_ids("</action>"), tokenizer.eos_token_id
    filler = tokenizer.convert_tokens_to_ids("a")
    # prompts of lengths 3, 4, 5 reach the scripted positions at different steps: rows end at steps 2, 5 and never
    model = ScriptedModel(len(tokenizer), {5: action_end, 9: eos}, filler)
    prompts = [[1, 2, 3], [1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    outs = _generate(HFEngine(share_prefill=share_prefill), model, tokenizer, prompts, ["</action>"], tokens=6)
    assert outs[0].token_ids == [filler, filler, action_end] and outs[0].finished
    assert outs[1].token_ids == [filler, filler, eos] and outs[1].finished
    assert outs[2].token_ids == [filler] * 6 and not outs[2].finished
    assert all(len(g.logprobs) == len(g.token_ids) for g in outs)


def test_text_is_decoded_only_where_the_last_token_can_end_a_stop_string(tiny_policy):
    tokenizer = tiny_policy.tokenizer
    decoded = []

    class Spy:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def __call__(self, *args, **kwargs):
            return tokenizer(*args, **kwargs)

        def decode(self, ids, **kwargs):
            decoded.append(list(ids))
            return tokenizer.decode(ids, **kwargs)

    spy = Spy()
    matcher = StopMatcher(spy, ["</foo>"], torch.device("cpu"))
    a, gt = tokenizer.convert_tokens_to_ids("a"), tokenizer.convert_tokens_to_ids(">")
    tokens = torch.tensor([[a, a, a], [a, a, gt], [a, a, a]])
    lengths = torch.tensor([3, 3, 2])
    done = matcher.finished(tokens, lengths, tokens[torch.arange(3), lengths - 1], torch.tensor([True, True, False]))
    assert not done.any()
    tails = [ids for ids in decoded if len(ids) > 1]
    assert tails == [[a, a, gt]]  # row 0 ends with "a" (cannot end "</foo>"), row 2 is not active


def test_sampling_live_rows_equals_multinomial_over_all_rows():
    generator = torch.Generator().manual_seed(0)
    for seed in range(20):
        logits = torch.randn(6, 50, generator=generator) * 3
        live = torch.tensor([0, 2, 3, 5])
        for sampling in (SamplingParams(1.0, 1.0, 4), SamplingParams(0.7, 0.9, 4), SamplingParams(0.0, 1.0, 4)):
            full_gen, live_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            token, logp = sample_next(logits, sampling, full_gen)
            live_token, live_logp = sample_rows(logits[live], live, 6, sampling, live_gen)
            assert torch.equal(token[live], live_token) and torch.equal(logp[live], live_logp)
            assert torch.equal(full_gen.get_state(), live_gen.get_state())


def test_inverse_cdf_sampler_draws_from_the_same_distribution_and_never_a_dropped_token():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.0, 0.0, 0.0, 1.0]])
    generator, counts = torch.Generator().manual_seed(0), torch.zeros(4)
    for _ in range(4000):
        token, logp = sample_rows(probs.log(), torch.tensor([0, 1]), 2, SamplingParams(1.0, 0.7, 1), generator,
                                  "inverse_cdf")
        counts[token[0]] += 1
        assert token[1] == 3 and torch.isfinite(logp).all()
    assert counts[2:].sum() == 0  # outside the top-p nucleus
    assert abs(counts[0] / 4000 - 0.5 / 0.8) < 0.03 and abs(counts[1] / 4000 - 0.3 / 0.8) < 0.03
    with pytest.raises(ValueError, match="sampler"):
        HFEngine(sampler="gumbel")


def _prompts(policy):
    texts = ["Task: choose apple\n", "Task: choose frost\nObservation: options: apple brick cloud delta ember\n" * 3,
             "Task:", "Task: choose grape\nObservation: options: heron\n"]
    return [policy.encode_prompt(t) for t in texts]


@pytest.mark.parametrize("sampling", [SamplingParams(1.0, 1.0, 16), SamplingParams(0.8, 0.9, 16),
                                      SamplingParams(0.0, 1.0, 16)])
def test_shared_prefill_generates_what_the_previous_loop_generates(tiny_policy, sampling):
    distinct = _prompts(tiny_policy)
    prompts = [p for p in distinct for _ in range(4)] + distinct  # G siblings share a prompt, lengths 2 to ~90
    stops = ["</action>", "</foo>", "e d"]
    runs = {}
    for share in (True, False):
        runs[share] = HFEngine(share_prefill=share).generate(tiny_policy.model, tiny_policy.tokenizer, prompts,
                                                             sampling, torch.Generator().manual_seed(11), stops)
    assert [g.token_ids for g in runs[True]] == [g.token_ids for g in runs[False]]
    assert [g.finished for g in runs[True]] == [g.finished for g in runs[False]]
    for new, old in zip(runs[True], runs[False]):
        assert torch.allclose(torch.tensor(new.logprobs), torch.tensor(old.logprobs), atol=1e-5)
    if sampling.temperature > 0:
        assert len({len(g.token_ids) for g in runs[True]}) > 1  # rows finished at different steps


def test_inverse_cdf_engine_logprobs_match_a_full_forward(tiny_policy):
    prompts = [p for p in _prompts(tiny_policy) for _ in range(3)]
    out = HFEngine(sampler="inverse_cdf").generate(tiny_policy.model, tiny_policy.tokenizer, prompts,
                                                   SamplingParams(1.0, 1.0, 12), torch.Generator().manual_seed(2))
    batch = pad_pairs(prompts, [g.token_ids for g in out], tiny_policy.tokenizer.pad_token_id)
    with torch.no_grad():
        logp = response_scores(tiny_policy.model, batch).logp
    for row, generation in enumerate(out):
        assert torch.allclose(logp[row, : len(generation.token_ids)], torch.tensor(generation.logprobs), atol=1e-5)


def test_prefill_runs_each_distinct_prompt_once(tiny_policy):
    tokenizer = tiny_policy.tokenizer
    model = ScriptedModel(len(tokenizer), {}, tokenizer.convert_tokens_to_ids("a"))
    prompts = [[1, 2, 3]] * 8 + [[4, 5, 6]] * 8
    HFEngine().generate(model, tokenizer, prompts, SamplingParams(1.0, 1.0, 3), torch.Generator(), [])
    assert model.calls[0] == (2, 3) and model.calls[1] == (16, 1)


# ---------------------------------------------------------------------------------------------------- scoring
def previous_response_scores(model, batch, with_entropy=False, top_k=0):
    """The previous implementation: logits at every position, then the response columns."""
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
        old = previous_response_scores(model, batch, with_entropy=True, top_k=3)
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


def test_token_scores_sorted_micro_batches_come_back_in_row_order(tiny_policy):
    _perturb(tiny_policy)
    prompts, responses = _pairs(tiny_policy)
    with torch.no_grad():
        whole, entropy, mask = tiny_policy.token_logprobs(prompts, responses, with_entropy=True, share_prompts=False)
        for share in (False, True):
            chunked, chunked_entropy, chunked_mask = tiny_policy.token_logprobs(
                prompts, responses, with_entropy=True, micro_batch_size=4, width=whole.shape[1] + 2,
                share_prompts=share)
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
    with torch.no_grad():
        expected, _, _ = policy.token_logprobs(prompts, responses, share_prompts=False)
    torch.testing.assert_close(logp.detach(), expected, atol=1e-6, rtol=1e-5)
    assert logp.requires_grad
