"""Generation engines: ``generate(prompts, sampling) -> token ids + sampling log-probs`` for a whole batch.

``HFEngine`` runs one batched, left-padded, KV-cached decoding loop over every active prompt of a turn and samples
with an explicit ``torch.Generator`` (Hugging Face ``generate`` draws from the global RNG, which craft_pl never uses).
Siblings share their prefill: each distinct prompt is run once and its KV cache copied to every row that has it;
finished rows leave the decoding batch; stop strings are matched on token ids, text is decoded only as a fallback.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicLayer

from craft_pl.distributed import gather_for_inference

DEFAULT_STOP_STRINGS = ("</action>",)
"""Stop strings when the caller names none (``AgentEnv.stop_strings``'s default)."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one response."""

    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 = off)."""
    max_new_tokens: int = 32
    """Longest response; a response cut here is an over-long generation (an invalid action)."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Generation:
    """One sampled response."""

    token_ids: list[int]
    logprobs: list[float]
    """Log-prob of each token under the distribution that sampled it (after temperature and top-p)."""
    finished: bool
    """False when the response hit ``max_new_tokens`` before a stop token."""


class GenerationEngine(ABC):
    """Turns a batch of prompt ids into sampled responses."""

    @abstractmethod
    def generate(
        self,
        model: torch.nn.Module,
        tokenizer,
        prompt_ids: list[list[int]],
        sampling: SamplingParams,
        generator: torch.Generator,
        stop_strings: Sequence[str] = DEFAULT_STOP_STRINGS,
    ) -> list[Generation]:
        """Sample one response per prompt, all prompts in batched forward passes; a response ends with EOS or once
        it ends with one of ``stop_strings`` (the environment's, ``AgentEnv.stop_strings``)."""


def sampling_logprobs(logits: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """Log-probs ``[rows, vocab]`` of the distribution a token is drawn from (temperature, then top-p)."""
    logits = logits.float()
    if sampling.temperature == 0:
        return F.log_softmax(logits, dim=-1)
    log_probs = F.log_softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_logp, order = log_probs.sort(dim=-1, descending=True)
        mass_before = sorted_logp.exp().cumsum(-1) - sorted_logp.exp()
        drop_sorted = mass_before >= sampling.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        log_probs = F.log_softmax(log_probs.masked_fill(drop, float("-inf")), dim=-1)
    return log_probs


def sample_next(logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a token per row from ``logits [rows, vocab]``; returns ``(token [rows], logp [rows])``."""
    log_probs = sampling_logprobs(logits, sampling)
    if sampling.temperature == 0:
        token = log_probs.argmax(-1)
    else:
        token = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)
    return token, log_probs.gather(-1, token[:, None]).squeeze(-1)


def sample_rows(logits: torch.Tensor, live: torch.Tensor, rows: int, sampling: SamplingParams,
                generator: torch.Generator, sampler: str = "race") -> tuple[torch.Tensor, torch.Tensor]:
    """``sample_next`` for the ``live`` rows of a ``rows``-row batch whose ``logits [live, vocab]`` alone are computed.

    ``race``: the generator advances exactly as ``torch.multinomial`` over all ``rows`` does (one Exp(1) draw per row
    and vocabulary entry, the race ``argmax(p / q)`` it runs for one sample), so identical logits give identical
    tokens whichever rows are still decoding. ``inverse_cdf``: one uniform draw per live row against the cumulative
    probabilities (float64): the same distribution, another random stream. Returns ``(token [live], logp [live])``."""
    log_probs = sampling_logprobs(logits, sampling)
    if sampling.temperature == 0:
        token = log_probs.argmax(-1)
    elif sampler == "inverse_cdf":
        cumulative = log_probs.double().exp().cumsum(-1)
        uniform = torch.rand(len(live), 1, generator=generator, dtype=torch.float64, device=cumulative.device)
        token = torch.searchsorted(cumulative, (1 - uniform) * cumulative[:, -1:]).squeeze(-1)  # (0, total]: p > 0
    else:
        race = log_probs.new_empty(rows, log_probs.shape[-1]).exponential_(1, generator=generator)
        token = (log_probs.exp() / race.index_select(0, live)).argmax(-1)
    return token, log_probs.gather(-1, token[:, None]).squeeze(-1)


class StopMatcher:
    """Ends responses at EOS or a stop string: single-token stops and the stop strings' own id sequences are matched
    on ids; text is decoded only for rows whose last token could end a stop string another way."""

    def __init__(self, tokenizer, stop_strings: Sequence[str], device: torch.device) -> None:
        self.tokenizer, self.stop_strings = tokenizer, list(stop_strings)
        single = {tokenizer.eos_token_id} - {None}
        self.texts, self.sequences = [], []
        for text in stop_strings:
            ids = list(tokenizer(text, add_special_tokens=False).input_ids)
            single.update(ids if len(ids) == 1 else [])
            if len(ids) > 1:
                self.texts.append(text)
                self.sequences.append(torch.tensor(ids, device=device))
        self.single_ids = torch.tensor(sorted(single), dtype=torch.long, device=device)
        self.window = max([8] + [len(s) for s in self.sequences])
        self._ends = {text[-1] for text in self.texts}
        self._could_end: dict[int, bool] = {}
        """Token id -> whether text ending with it can end a multi-token stop string (a partial character can)."""

    def finished(self, tokens: torch.Tensor, lengths: torch.Tensor, token: torch.Tensor,
                 active: torch.Tensor) -> torch.Tensor:
        """Rows ``[rows]`` that end at this step: ``tokens [rows, T]`` hold each row's ``lengths`` tokens so far, the
        last of them ``token``; only ``active`` rows are looked at."""
        done = torch.isin(token, self.single_ids) & active
        for sequence in self.sequences:
            span = len(sequence)
            columns = (lengths[:, None] - span + torch.arange(span, device=tokens.device)).clamp_min(0)
            done |= (tokens.gather(1, columns) == sequence).all(-1) & (lengths >= span) & active
        if not self.texts:
            return done
        undecided = torch.nonzero(active & ~done).flatten()
        for row, token_id in zip(undecided.tolist(), token[undecided].tolist()):
            if token_id not in self._could_end:
                text = self.tokenizer.decode([token_id])
                self._could_end[token_id] = not text or "\ufffd" in text or text[-1] in self._ends
            if self._could_end[token_id]:
                end = int(lengths[row])
                tail = self.tokenizer.decode(tokens[row, max(0, end - self.window) : end].tolist())
                done[row] = any(tail.endswith(text) for text in self.texts)
        return done


class _PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys/values live in buffers with room for the whole response: a decoding step writes
    in place instead of concatenating (``keys``/``values`` are views of the ``filled`` part)."""

    def __init__(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, filled: int) -> None:
        super().__init__()
        self.device, self.is_initialized, self.filled = key_buffer.device, True, filled
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        self._views()

    def _views(self) -> None:
        self.keys = self.key_buffer[..., : self.filled, :]
        self.values = self.value_buffer[..., : self.filled, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        new = key_states.shape[-2]
        self.key_buffer[..., self.filled : self.filled + new, :] = key_states
        self.value_buffer[..., self.filled : self.filled + new, :] = value_states
        self.filled += new
        self._views()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.key_buffer = self.key_buffer.index_select(0, indices)
        self.value_buffer = self.value_buffer.index_select(0, indices)
        self._views()


def _plain(cache) -> bool:  # a cache made of plain dynamic layers only
    return cache is not None and all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def prefill(model, prompts: list[list[int]], pad_id: int, device, stretch: float) -> list[tuple[list[int], object]]:
    """Run each prompt once, in buckets of similar length (a bucket's longest at most ``stretch`` x its shortest):
    ``[(prompt numbers, model output)]``. One bucket when the model's cache is not made of plain dynamic layers
    (those alone can be re-padded)."""
    buckets: list[list[int]] = []
    for number in sorted(range(len(prompts)), key=lambda n: len(prompts[n])):
        if buckets and len(prompts[number]) <= stretch * len(prompts[buckets[-1][0]]):
            buckets[-1].append(number)
        else:
            buckets.append([number])
    parts = []
    for bucket in buckets if len(buckets) > 1 else [list(range(len(prompts)))]:
        input_ids, mask, positions = left_padded([prompts[i] for i in bucket], pad_id, device)
        out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        if len(buckets) > 1 and not _plain(out.cache):
            return prefill(model, prompts, pad_id, device, float("inf"))
        parts.append((bucket, out))
    return parts


def decoding_state(parts, index: list[int], width: int, capacity: int):
    """``(cache, next-token logits [rows, vocab])`` of the decoding batch from the prefill ``parts``: row ``r`` gets
    prompt ``index[r]``'s keys/values right-aligned at column ``width`` in buffers of ``capacity`` columns (a cache
    of another kind is indexed as it is)."""
    where = {prompt: (part, position) for part, (bucket, _) in enumerate(parts) for position, prompt in enumerate(bucket)}
    logits = parts[0][1].logits.new_empty(len(index), parts[0][1].logits.shape[-1])
    device, picks = logits.device, []  # per part: (rows of the batch, their prompts' positions in the part)
    for part, (_, out) in enumerate(parts):
        rows = [r for r, p in enumerate(index) if where[p][0] == part]
        picks.append((torch.tensor(rows, device=device), torch.tensor([where[index[r]][1] for r in rows], device=device)))
        logits[picks[-1][0]] = out.logits[:, -1].index_select(0, picks[-1][1])
    cache = parts[0][1].cache
    if not _plain(cache):
        if cache is not None:
            cache.reorder_cache(torch.tensor(index, device=device))
        return cache, logits
    for number, layer in enumerate(cache.layers):
        buffers = []
        for name in ("keys", "values"):
            like = getattr(layer, name)
            buffer = like.new_zeros(len(index), *like.shape[1:-2], capacity, like.shape[-1])
            for (_, out), (rows, positions) in zip(parts, picks):
                source = getattr(out.cache.layers[number], name)
                buffer[rows, ..., width - source.shape[-2] : width, :] = source.index_select(0, positions)
            buffers.append(buffer)
        cache.layers[number] = _PreallocatedLayer(*buffers, width)
    return cache, logits


def _outputs(rows: int, steps: int, pad_id: int, device):
    """Empty ``tokens, logps [rows, steps]``, ``lengths [rows]`` and the all-true ``active [rows]``."""
    return (torch.full((rows, steps), pad_id, dtype=torch.long, device=device), torch.zeros(rows, steps, device=device),
            torch.zeros(rows, dtype=torch.long, device=device), torch.ones(rows, dtype=torch.bool, device=device))


def left_padded(prompt_ids: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``input_ids, attention_mask, position_ids [rows, longest]`` of left-padded prompts."""
    rows, width = len(prompt_ids), max(len(p) for p in prompt_ids)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(rows, width, dtype=torch.long)
    for row, prompt in enumerate(prompt_ids):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    return input_ids.to(device), attention_mask.to(device), position_ids.to(device)


class HFEngine(GenerationEngine):
    """Batched Hugging Face decoding with a KV cache, explicit RNG and stop strings."""

    compact_below = 0.75  # finished rows leave the decoding batch once the unfinished are fewer than this share
    prefill_stretch = 1.5  # prompts prefilled together: the longest at most this many times the shortest

    def __init__(self, max_batch_size: int = 256, stop_strings: list[str] | None = None, share_prefill: bool = True,
                 sampler: Literal["race", "inverse_cdf"] = "race") -> None:
        """
        Args:
            max_batch_size: Prompts decoded together in one loop (larger batches are split).
            stop_strings: Stop once the response ends with one of these (null = the environment's stop strings).
            share_prefill: Run each distinct prompt once (in buckets of similar length) and share its KV cache among
                the rows that have it (G siblings at their first turn), drop finished rows from the batch and match
                stop strings on ids; false = the previous loop (one prefill row per prompt, every row decoded to the
                last step, stop strings decoded on every row), kept for comparison. Both draw the same random numbers.
            sampler: ``race`` draws as ``torch.multinomial`` does (the tokens of earlier versions); ``inverse_cdf``
                draws once per unfinished row (same distribution, other samples; with ``share_prefill`` only).
        """
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if sampler not in ("race", "inverse_cdf"):
            raise ValueError(f"sampler must be 'race' or 'inverse_cdf', got {sampler!r}")
        self.max_batch_size, self.stop_strings = max_batch_size, stop_strings
        self.share_prefill, self.sampler = share_prefill, sampler
        self._matcher: StopMatcher | None = None

    @torch.no_grad()
    def generate(self, model, tokenizer, prompt_ids, sampling, generator,
                 stop_strings: Sequence[str] = DEFAULT_STOP_STRINGS) -> list[Generation]:
        gather_for_inference(model)  # sharded model: whole parameters once, then no collective per decoding step
        stops = list(self.stop_strings if self.stop_strings is not None else stop_strings)
        device = next(model.parameters()).device
        matcher = self._matcher  # stop strings are tokenized once per tokenizer
        if matcher is None or matcher.tokenizer is not tokenizer or matcher.stop_strings != stops \
                or matcher.single_ids.device != device:
            self._matcher = StopMatcher(tokenizer, stops, device)
        decode = self._decode_shared if self.share_prefill else self._decode_every_row
        results: list[Generation] = []
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(prompt_ids), self.max_batch_size):
                batch = prompt_ids[start : start + self.max_batch_size]
                tokens, logps, lengths, active = decode(model, tokenizer, batch, sampling, generator, device)
                lengths_list, finished_list = lengths.tolist(), (~active).tolist()
                tokens_list, logps_list = tokens.tolist(), logps.tolist()
                results.extend(Generation(tokens_list[r][: lengths_list[r]], logps_list[r][: lengths_list[r]],
                                          finished_list[r]) for r in range(len(batch)))
        finally:
            model.train(was_training)
        return results

    def _decode_shared(self, model, tokenizer, prompt_ids, sampling, generator, device):
        """Prefill each distinct prompt once, then decode every row; finished rows leave the batch."""
        rows, pad_id, steps = len(prompt_ids), tokenizer.pad_token_id, sampling.max_new_tokens
        distinct: dict[tuple[int, ...], int] = {}
        index = [distinct.setdefault(tuple(p), len(distinct)) for p in prompt_ids]
        prompts = [list(p) for p in distinct]
        _, prompt_mask, prompt_positions = left_padded(prompts, pad_id, device)
        width, rows_index = prompt_mask.shape[1], torch.tensor(index, device=device)
        cache, logits = decoding_state(prefill(model, prompts, pad_id, device, self.prefill_stretch), index, width,
                                       width + steps)
        attention_mask = torch.ones(rows, width + steps, dtype=torch.long, device=device)
        attention_mask[:, :width] = prompt_mask.index_select(0, rows_index)
        positions = prompt_positions[:, -1:].index_select(0, rows_index)
        tokens, logps, lengths, active = _outputs(rows, steps, pad_id, device)
        live = torch.arange(rows, device=device)  # rows of the decoding batch, in row order
        for step in range(steps):
            token, token_logp = sample_rows(logits, live, rows, sampling, generator, self.sampler)
            live_active = active.index_select(0, live)
            tokens[live, step] = torch.where(live_active, token, torch.full_like(token, pad_id))
            logps[live, step] = torch.where(live_active, token_logp, torch.zeros_like(token_logp))
            lengths += active.long()
            active = active & ~self._matcher.finished(tokens, lengths, tokens[:, step], active)
            still = active.index_select(0, live)
            remaining = int(still.sum())
            if remaining == 0 or step + 1 == steps:
                break
            if remaining < self.compact_below * len(live):
                keep = torch.nonzero(still).flatten()
                live, attention_mask, positions = (t.index_select(0, keep) for t in (live, attention_mask, positions))
                if cache is not None:
                    cache.batch_select_indices(keep)
            positions = positions + 1
            out = model(input_ids=tokens[:, step].index_select(0, live)[:, None], position_ids=positions,
                        attention_mask=attention_mask[:, : width + step + 1], cache=cache, use_cache=True,
                        logits_to_keep=1)
            cache, logits = out.cache, out.logits[:, -1]
        return tokens, logps, lengths, active

    def _decode_every_row(self, model, tokenizer, prompt_ids, sampling, generator, device):
        """The previous loop: one prefill row per prompt, every row decoded until the last one finishes."""
        rows, pad_id = len(prompt_ids), tokenizer.pad_token_id
        input_ids, attention_mask, position_ids = left_padded(prompt_ids, pad_id, device)
        stop_ids, multi_token_stops = self._matcher.single_ids, self._matcher.texts
        tokens, logps, lengths, active = _outputs(rows, sampling.max_new_tokens, pad_id, device)
        cache, step_ids, step_positions = None, input_ids, position_ids
        for step in range(sampling.max_new_tokens):
            out = model(input_ids=step_ids, attention_mask=attention_mask, position_ids=step_positions,
                        cache=cache, use_cache=True, logits_to_keep=1)
            cache = out.cache
            token, token_logp = sample_next(out.logits[:, -1], sampling, generator)
            token = torch.where(active, token, torch.full_like(token, pad_id))
            tokens[:, step] = token
            logps[:, step] = torch.where(active, token_logp, torch.zeros_like(token_logp))
            lengths += active.long()
            finished = torch.isin(token, stop_ids)
            for row in torch.nonzero(active).flatten().tolist() if multi_token_stops else []:
                end = int(lengths[row])
                tail = tokenizer.decode(tokens[row, max(0, end - 8) : end].tolist())
                finished[row] |= any(tail.endswith(s) for s in multi_token_stops)
            active = active & ~finished
            if not bool(active.any()):
                break
            attention_mask = torch.cat([attention_mask, active.long()[:, None]], dim=1)
            step_positions = step_positions[:, -1:] + 1
            step_ids = token[:, None]
        return tokens, logps, lengths, active
