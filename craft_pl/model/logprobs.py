"""Per-token log-probs of (prompt, response) pairs.

Layout: prompts are left-padded to a common width P and responses right-padded to a common width R, so every
response starts at column P and the logits that predict it are the columns ``P-1 .. P+R-2``; only those columns go
through the LM head. Rows that share a prompt (G siblings) can run it once (``shared_prompt_scores``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PairBatch:
    """Padded (prompt, response) pairs.

    input_ids, attention_mask, position_ids: ``[rows, P + R]``; response_ids, response_mask: ``[rows, R]``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    prompt_width: int


def pad_pairs(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int) -> PairBatch:
    """Left-pad prompts and right-pad responses into one ``PairBatch``."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    rows = len(prompt_ids)
    prompt_width = max(len(p) for p in prompt_ids)
    response_width = max(1, max(len(r) for r in response_ids))
    input_ids = torch.full((rows, prompt_width + response_width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
        start = prompt_width - len(prompt)
        input_ids[row, start:prompt_width] = torch.tensor(prompt, dtype=torch.long)
        input_ids[row, prompt_width : prompt_width + len(response)] = torch.tensor(response, dtype=torch.long)
        attention_mask[row, start : prompt_width + len(response)] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    response_mask = attention_mask[:, prompt_width:].bool()
    return PairBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        response_ids=input_ids[:, prompt_width:],
        response_mask=response_mask,
        prompt_width=prompt_width,
    )


@dataclass
class ResponseScores:
    """What one forward pass says about each response token; tensors ``[rows, R]`` (``[rows, R, k]`` for top-k).

    Padded positions hold 0 (``top_ids`` hold 0 too).
    """

    logp: torch.Tensor
    entropy: torch.Tensor | None = None
    sampled_logit: torch.Tensor | None = None
    """Raw logit of the sampled token (for contrastive losses on logits)."""
    top_logits: torch.Tensor | None = None
    """The ``k`` largest logits at each position, sampled token excluded (set to -inf before the top-k)."""
    top_ids: torch.Tensor | None = None
    log_probs: torch.Tensor | None = None
    """The whole next-token distribution ``[rows, R, vocab]`` (log-probs; 0 at padded positions), when asked."""


def response_scores(model: torch.nn.Module, batch: PairBatch, with_entropy: bool = False, top_k: int = 0,
                    full: bool = False, temperature: float = 1.0) -> ResponseScores:
    """Log-prob of each response token and, optionally, the entropy and the top-k competing logits.

    The LM head runs only at the ``R + 1`` last positions (``logits_to_keep``), never at the prompt's."""
    device = next(model.parameters()).device
    width = batch.response_ids.shape[1]
    outputs = model(
        input_ids=batch.input_ids.to(device),
        attention_mask=batch.attention_mask.to(device),
        position_ids=batch.position_ids.to(device),
        use_cache=False,
        logits_to_keep=width + 1,
    )
    return scores_from_logits(outputs.logits[:, -width - 1 : -1], batch.response_ids.to(device),
                              batch.response_mask.to(device), with_entropy, top_k, full, temperature)


def scores_from_logits(logits: torch.Tensor, response_ids: torch.Tensor, mask: torch.Tensor, with_entropy: bool,
                       top_k: int, full: bool = False, temperature: float = 1.0) -> ResponseScores:
    """``ResponseScores`` from the logits ``[rows, R, vocab]`` that predict ``response_ids [rows, R]`` (with the
    whole log-softmax when ``full``). Log-probs and entropy are those of ``softmax(logits / temperature)``, the
    distribution a rollout at that temperature samples from; ``sampled_logit`` and ``top_logits`` stay raw."""
    if not temperature > 0:
        raise ValueError(f"scoring temperature must be > 0, got {temperature}")
    logits = logits.float()
    log_probs = F.log_softmax(logits if temperature == 1.0 else logits / temperature, dim=-1)
    token_logp = log_probs.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
    scores = ResponseScores(logp=torch.where(mask, token_logp, torch.zeros_like(token_logp)))
    if with_entropy:
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        scores.entropy = torch.where(mask, entropy, torch.zeros_like(entropy))
    if top_k:
        sampled = logits.gather(-1, response_ids.unsqueeze(-1)).squeeze(-1)
        scores.sampled_logit = torch.where(mask, sampled, torch.zeros_like(sampled))
        others = logits.scatter(-1, response_ids.unsqueeze(-1), float("-inf"))
        top_logits, top_ids = others.topk(top_k, dim=-1)
        scores.top_logits = torch.where(mask.unsqueeze(-1), top_logits, torch.zeros_like(top_logits))
        scores.top_ids = torch.where(mask.unsqueeze(-1), top_ids, torch.zeros_like(top_ids))
    if full:
        scores.log_probs = torch.where(mask.unsqueeze(-1), log_probs, torch.zeros_like(log_probs))
    return scores


def shared_prompt_scores(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]],
                         pad_id: int, with_entropy: bool = False, top_k: int = 0,
                         full: bool = False, temperature: float = 1.0) -> ResponseScores | None:
    """``response_scores`` with each distinct prompt run once: its KV cache is indexed to the rows that share it
    (G siblings share their prompt) and the responses run after it. The same computation up to float rounding;
    None when the model keeps no cache here (activation checkpointing while training), for the caller to fall back.
    """
    device = next(model.parameters()).device
    distinct: dict[tuple[int, ...], int] = {}
    index = torch.tensor([distinct.setdefault(tuple(p), len(distinct)) for p in prompt_ids], device=device)
    prompts = [list(p) for p in distinct]
    rows, prompt_width = len(prompt_ids), max(len(p) for p in prompts)
    width = max(1, max(len(r) for r in response_ids))
    input_ids = torch.full((len(prompts), prompt_width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros_like(input_ids)
    for number, prompt in enumerate(prompts):
        input_ids[number, prompt_width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        prompt_mask[number, prompt_width - len(prompt) :] = 1
    responses = torch.full((rows, width), pad_id, dtype=torch.long)
    for row, response in enumerate(response_ids):
        responses[row, : len(response)] = torch.tensor(response, dtype=torch.long)
    prompt_mask, responses = prompt_mask.to(device), responses.to(device)
    response_mask = torch.arange(width, device=device)[None, :] < torch.tensor([len(r) for r in response_ids],
                                                                               device=device)[:, None]
    prompt_lengths = prompt_mask.sum(-1)
    out = model(input_ids=input_ids.to(device), attention_mask=prompt_mask,
                position_ids=(prompt_mask.cumsum(-1) - 1).clamp_min(0), use_cache=True, logits_to_keep=1)
    cache = out.cache
    if cache is None or cache.get_seq_length() != prompt_width:
        return None
    logits = out.logits[:, -1:].index_select(0, index)
    if width > 1:
        cache.reorder_cache(index)  # row r attends to the cached prompt index[r] (a differentiable index)
        follow = model(
            input_ids=responses[:, :-1],
            attention_mask=torch.cat([prompt_mask.index_select(0, index), response_mask[:, :-1].long()], dim=1),
            position_ids=prompt_lengths.index_select(0, index)[:, None] + torch.arange(width - 1, device=device),
            cache=cache, use_cache=True,
        )
        logits = torch.cat([logits, follow.logits], dim=1)
    return scores_from_logits(logits, responses, response_mask, with_entropy, top_k, full, temperature)


def score_pairs(model: torch.nn.Module, prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
                with_entropy: bool = False, top_k: int = 0, full: bool = False,
                temperature: float = 1.0) -> ResponseScores:
    """Scores of (prompt, response) pairs: through ``shared_prompt_scores`` when a prompt repeats (and the layers
    keep a cache), else one padded forward (``response_scores``)."""
    if len({tuple(p) for p in prompt_ids}) < len(prompt_ids) and not _checkpointing(model):
        scores = shared_prompt_scores(model, prompt_ids, response_ids, pad_id, with_entropy, top_k, full,
                                      temperature)
        if scores is not None:
            return scores
    return response_scores(model, pad_pairs(prompt_ids, response_ids, pad_id), with_entropy, top_k, full,
                           temperature)


def _checkpointing(model: torch.nn.Module) -> bool:
    """Whether a forward now would recompute activations in backward (the layers then keep no cache)."""
    return torch.is_grad_enabled() and model.training and any(
        getattr(module, "gradient_checkpointing", False) for module in model.modules())


def response_logprobs(
    model: torch.nn.Module, batch: PairBatch, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each response token ``[rows, R]`` and, optionally, the entropy there; padded positions hold 0."""
    scores = response_scores(model, batch, with_entropy)
    return scores.logp, scores.entropy
