"""Generation engines: ``generate(prompts, sampling) -> token ids + sampling log-probs`` for a whole batch.

``HFEngine`` runs one batched, KV-cached decoding loop over every prompt of a turn: each distinct prompt is
prefilled once and its KV cache shared by the rows that have it (G siblings at their first turn, ``kv_cache.py``),
tokens are drawn with an explicit ``torch.Generator`` (``sampling.py``; Hugging Face ``generate`` draws from the
global RNG, which craft_pl never uses), responses end at EOS or a stop string matched on token ids (``stops.py``),
and finished rows leave the decoding batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from craft_pl.distributed import gather_for_inference
from craft_pl.rollout.kv_cache import decoding_state, left_padded, prefill
from craft_pl.rollout.sampling import SAMPLERS, SamplingParams, sample_rows
from craft_pl.rollout.stops import DEFAULT_STOP_STRINGS, StopMatcher

__all__ = ["DEFAULT_STOP_STRINGS", "Generation", "GenerationEngine", "HFEngine", "SamplingParams"]


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


def _outputs(rows: int, steps: int, pad_id: int, device):
    """Empty ``tokens, logps [rows, steps]``, ``lengths [rows]`` and the all-true ``active [rows]``."""
    return (torch.full((rows, steps), pad_id, dtype=torch.long, device=device), torch.zeros(rows, steps, device=device),
            torch.zeros(rows, dtype=torch.long, device=device), torch.ones(rows, dtype=torch.bool, device=device))


class HFEngine(GenerationEngine):
    """Batched Hugging Face decoding with a shared-prefill KV cache, explicit RNG and stop strings."""

    compact_below = 0.75  # finished rows leave the decoding batch once the unfinished are fewer than this share
    prefill_stretch = 1.5  # prompts prefilled together: the longest at most this many times the shortest

    def __init__(self, max_batch_size: int = 256, stop_strings: list[str] | None = None,
                 sampler: Literal["race", "inverse_cdf"] = "race") -> None:
        """
        Args:
            max_batch_size: Prompts decoded together in one loop (larger batches are split).
            stop_strings: Stop once the response ends with one of these (null = the environment's stop strings).
            sampler: ``race`` draws as ``torch.multinomial`` over the whole batch does (the tokens of earlier
                versions); ``inverse_cdf`` draws once per unfinished row (same distribution, other samples).
        """
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be 'race' or 'inverse_cdf', got {sampler!r}")
        self.max_batch_size, self.stop_strings, self.sampler = max_batch_size, stop_strings, sampler
        self._matcher: StopMatcher | None = None

    @torch.no_grad()
    def generate(self, model, tokenizer, prompt_ids, sampling, generator,
                 stop_strings: Sequence[str] = DEFAULT_STOP_STRINGS) -> list[Generation]:
        gather_for_inference(model)  # sharded model: whole parameters once, then no collective per decoding step
        stops = list(self.stop_strings if self.stop_strings is not None else stop_strings)
        device = next(model.parameters()).device
        if self._matcher is None or not self._matcher.serves(tokenizer, stops, device):
            self._matcher = StopMatcher(tokenizer, stops, device)  # stop strings are tokenized once per tokenizer
        results: list[Generation] = []
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(prompt_ids), self.max_batch_size):
                batch = prompt_ids[start : start + self.max_batch_size]
                tokens, logps, lengths, active = self._decode(model, tokenizer, batch, sampling, generator, device)
                lengths_list, finished_list = lengths.tolist(), (~active).tolist()
                tokens_list, logps_list = tokens.tolist(), logps.tolist()
                results.extend(Generation(tokens_list[r][: lengths_list[r]], logps_list[r][: lengths_list[r]],
                                          finished_list[r]) for r in range(len(batch)))
        finally:
            model.train(was_training)
        return results

    def _decode(self, model, tokenizer, prompt_ids, sampling, generator, device):
        """Prefill each distinct prompt once, then decode every row; finished rows leave the batch.

        Returns ``tokens, logps [rows, max_new_tokens]`` (pad / 0 past each row's end), ``lengths [rows]`` and
        ``active [rows]`` (true for rows cut at ``max_new_tokens``)."""
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
