"""Sampling maths of the generation engines: what a response is drawn with, and the draw itself.

``sample_rows`` draws one token per unfinished row with an explicit ``torch.Generator`` (craft_pl never uses the
global RNG); its ``race`` sampler advances the generator exactly as ``torch.multinomial`` over every row of the batch
would, so the tokens do not depend on which rows are still decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


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


SAMPLERS = ("race", "inverse_cdf")


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


def sample_rows(logits: torch.Tensor, live: torch.Tensor, rows: int, sampling: SamplingParams,
                generator: torch.Generator, sampler: str = "race") -> tuple[torch.Tensor, torch.Tensor]:
    """Draw a token for each of the ``live`` rows of a ``rows``-row batch whose ``logits [live, vocab]`` alone are
    computed.

    ``race``: the generator advances exactly as ``torch.multinomial`` over all ``rows`` does (one Exp(1) draw per row
    and vocabulary entry, the race ``argmax(p / q)`` it runs for one sample), so identical logits give identical
    tokens whichever rows are still decoding. ``inverse_cdf``: one uniform draw per live row against the cumulative
    probabilities (float64): the same distribution, another random stream. Greedy (temperature 0) draws nothing.
    Returns ``(token [live], logp [live])``, the log-prob under the distribution the token was drawn from."""
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
