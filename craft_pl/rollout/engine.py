"""Generation engines: ``generate(prompts, sampling) -> token ids + sampling log-probs`` for a whole batch.

``HFEngine`` runs one batched, left-padded, KV-cached decoding loop over every active prompt of a turn and samples
with an explicit ``torch.Generator`` (Hugging Face ``generate`` draws from the global RNG, which craft_pl never uses).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

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


def sample_next(logits: torch.Tensor, sampling: SamplingParams, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a token per row from ``logits [rows, vocab]``; returns ``(token [rows], logp [rows])``."""
    logits = logits.float()
    if sampling.temperature == 0:
        log_probs = F.log_softmax(logits, dim=-1)
        token = log_probs.argmax(-1)
        return token, log_probs.gather(-1, token[:, None]).squeeze(-1)
    log_probs = F.log_softmax(logits / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_logp, order = log_probs.sort(dim=-1, descending=True)
        mass_before = sorted_logp.exp().cumsum(-1) - sorted_logp.exp()
        drop_sorted = mass_before >= sampling.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        log_probs = F.log_softmax(log_probs.masked_fill(drop, float("-inf")), dim=-1)
    token = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)
    return token, log_probs.gather(-1, token[:, None]).squeeze(-1)


class HFEngine(GenerationEngine):
    """Batched Hugging Face decoding with a KV cache, explicit RNG and stop strings."""

    def __init__(self, max_batch_size: int = 256, stop_strings: list[str] | None = None) -> None:
        """
        Args:
            max_batch_size: Prompts decoded together in one loop (larger batches are split).
            stop_strings: Stop once the response ends with one of these (null = the environment's stop strings).
        """
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.max_batch_size = max_batch_size
        self.stop_strings = stop_strings

    @staticmethod
    def _stop_token_ids(tokenizer, stop_strings: list[str]) -> set[int]:
        stop = {tokenizer.eos_token_id}
        for text in stop_strings:
            ids = tokenizer(text, add_special_tokens=False).input_ids
            if len(ids) == 1:
                stop.add(ids[0])
        return stop

    @torch.no_grad()
    def generate(self, model, tokenizer, prompt_ids, sampling, generator,
                 stop_strings: Sequence[str] = DEFAULT_STOP_STRINGS) -> list[Generation]:
        gather_for_inference(model)  # sharded model: whole parameters once, then no collective per decoding step
        stops = list(self.stop_strings if self.stop_strings is not None else stop_strings)
        results: list[Generation] = []
        for start in range(0, len(prompt_ids), self.max_batch_size):
            results.extend(self._generate_batch(model, tokenizer, prompt_ids[start : start + self.max_batch_size],
                                                sampling, generator, stops))
        return results

    def _generate_batch(self, model, tokenizer, prompt_ids, sampling, generator, stop_strings) -> list[Generation]:
        device = next(model.parameters()).device
        rows = len(prompt_ids)
        width = max(len(p) for p in prompt_ids)
        pad_id = tokenizer.pad_token_id
        input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros(rows, width, dtype=torch.long)
        for row, prompt in enumerate(prompt_ids):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
        stop_ids = torch.tensor(sorted(self._stop_token_ids(tokenizer, stop_strings)), device=device)
        multi_token_stops = [s for s in stop_strings if len(tokenizer(s, add_special_tokens=False).input_ids) > 1]

        tokens = torch.full((rows, sampling.max_new_tokens), pad_id, dtype=torch.long, device=device)
        logps = torch.zeros(rows, sampling.max_new_tokens, device=device)
        lengths = torch.zeros(rows, dtype=torch.long, device=device)
        active = torch.ones(rows, dtype=torch.bool, device=device)
        cache = None
        step_ids, step_positions = input_ids, position_ids
        was_training = model.training
        model.eval()
        try:
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
                if multi_token_stops:
                    finished |= self._ends_with_stop(tokenizer, tokens, lengths, active, multi_token_stops)
                active = active & ~finished
                if not bool(active.any()):
                    break
                attention_mask = torch.cat([attention_mask, active.long()[:, None]], dim=1)
                step_positions = step_positions[:, -1:] + 1
                step_ids = token[:, None]
        finally:
            model.train(was_training)
        lengths_list = lengths.tolist()
        finished_list = (~active).tolist()
        tokens_list, logps_list = tokens.tolist(), logps.tolist()
        return [Generation(tokens_list[r][: lengths_list[r]], logps_list[r][: lengths_list[r]], finished_list[r])
                for r in range(rows)]

    @staticmethod
    def _ends_with_stop(tokenizer, tokens, lengths, active, stops) -> torch.Tensor:
        """Rows whose decoded tail ends with a multi-token stop string (only active rows are decoded)."""
        hits = torch.zeros_like(active)
        for row in torch.nonzero(active).flatten().tolist():
            end = int(lengths[row])
            tail = tokenizer.decode(tokens[row, max(0, end - 8) : end].tolist())
            hits[row] = any(tail.endswith(s) for s in stops)
        return hits
