"""The decoding loop's parts: shared prefills, finished rows leaving the batch, stop strings matched on ids, the
samplers; each checked against a plain reference loop written here (one prefill row per prompt, every row decoded to
the last step, stop strings decoded on every row, ``torch.multinomial`` over all rows)."""

import pytest
import torch

from craft_pl.model.logprobs import pad_pairs, response_scores
from craft_pl.rollout.engine import Generation, HFEngine, SamplingParams
from craft_pl.rollout.kv_cache import left_padded
from craft_pl.rollout.sampling import sample_rows, sampling_logprobs
from craft_pl.rollout.stops import StopMatcher


def sample_next(logits, sampling, generator):
    """The reference draw: ``torch.multinomial`` over every row of ``logits [rows, vocab]``."""
    log_probs = sampling_logprobs(logits, sampling)
    if sampling.temperature == 0:
        token = log_probs.argmax(-1)
    else:
        token = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)
    return token, log_probs.gather(-1, token[:, None]).squeeze(-1)


@torch.no_grad()
def reference_generate(model, tokenizer, prompt_ids, sampling, generator, stop_strings):
    """The plain loop: one left-padded prefill row per prompt, a cache grown by concatenation, every row decoded
    until the last one finishes, stop strings checked by decoding each active row's tail."""
    was_training = model.training
    model.eval()
    rows, pad_id = len(prompt_ids), tokenizer.pad_token_id
    input_ids, attention_mask, position_ids = left_padded(prompt_ids, pad_id, "cpu")
    stop_ids = {tokenizer.eos_token_id} | {ids[0] for s in stop_strings
                                           if len(ids := tokenizer(s, add_special_tokens=False).input_ids) == 1}
    texts = [s for s in stop_strings if len(tokenizer(s, add_special_tokens=False).input_ids) > 1]
    tokens, logps = [[] for _ in range(rows)], [[] for _ in range(rows)]
    active = torch.ones(rows, dtype=torch.bool)
    cache, step_ids, step_positions = None, input_ids, position_ids
    for _ in range(sampling.max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=attention_mask, position_ids=step_positions, cache=cache,
                    use_cache=True, logits_to_keep=1)
        cache = out.cache
        token, token_logp = sample_next(out.logits[:, -1], sampling, generator)
        token = torch.where(active, token, torch.full_like(token, pad_id))
        for row in torch.nonzero(active).flatten().tolist():
            tokens[row].append(int(token[row]))
            logps[row].append(float(token_logp[row]))
            tail = tokenizer.decode(tokens[row][-8:])
            if tokens[row][-1] in stop_ids or any(tail.endswith(text) for text in texts):
                active[row] = False
        if not bool(active.any()):
            break
        attention_mask = torch.cat([attention_mask, active.long()[:, None]], dim=1)
        step_positions = step_positions[:, -1:] + 1
        step_ids = token[:, None]
    model.train(was_training)
    return [Generation(tokens[r], logps[r], not bool(active[r])) for r in range(rows)]


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
    """``engine``: an engine class, or None for the reference loop."""
    args = (model, tokenizer, prompts, SamplingParams(1.0, 1.0, tokens), torch.Generator().manual_seed(seed), stops)
    return engine().generate(*args) if engine is not None else reference_generate(*args)


@pytest.mark.parametrize("engine", [HFEngine, None])
def test_multi_token_stop_in_its_own_ids_and_spelled_otherwise(tiny_policy, engine):
    tokenizer = tiny_policy.tokenizer
    canonical = tokenizer("</foo>", add_special_tokens=False).input_ids
    spelled = [tokenizer.convert_tokens_to_ids(c) for c in "</foo>"]
    assert len(canonical) > 1 and spelled != canonical  # a multi-token stop, and a second way to write it
    filler = tokenizer.convert_tokens_to_ids("a")
    for ids in (canonical, spelled):
        prompt = [5, 7, 9]  # positions 0..2; the response starts at position 3
        model = ScriptedModel(len(tokenizer), {3 + k: t for k, t in enumerate([filler, filler] + ids)}, filler)
        out = _generate(engine, model, tokenizer, [prompt], ["</foo>"])[0]
        assert out.token_ids == [filler, filler] + ids and out.finished
        assert tokenizer.decode(out.token_ids).endswith("</foo>")


@pytest.mark.parametrize("engine", [HFEngine, None])
def test_single_token_stop_eos_and_the_length_limit(tiny_policy, engine):
    tokenizer = tiny_policy.tokenizer
    action_end, eos = tokenizer.convert_tokens_to_ids("</action>"), tokenizer.eos_token_id
    filler = tokenizer.convert_tokens_to_ids("a")
    # prompts of lengths 3, 4, 5 reach the scripted positions at different steps: rows end at steps 2, 5 and never
    model = ScriptedModel(len(tokenizer), {5: action_end, 9: eos}, filler)
    prompts = [[1, 2, 3], [1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    outs = _generate(engine, model, tokenizer, prompts, ["</action>"], tokens=6)
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
def test_shared_prefill_generates_what_the_reference_loop_generates(tiny_policy, sampling):
    distinct = _prompts(tiny_policy)
    prompts = [p for p in distinct for _ in range(4)] + distinct  # G siblings share a prompt, lengths 2 to ~90
    stops = ["</action>", "</foo>", "e d"]
    args = (tiny_policy.model, tiny_policy.tokenizer, prompts, sampling, torch.Generator().manual_seed(11), stops)
    runs = {True: HFEngine().generate(*args)}
    args = (*args[:4], torch.Generator().manual_seed(11), stops)
    runs[False] = reference_generate(*args)
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
