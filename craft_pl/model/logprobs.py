"""Per-token log-probs of (prompt, response) pairs in one padded forward pass.

Layout: prompts are left-padded to a common width P and responses right-padded to a common width R, so every
response starts at column P and the logits that predict it are the columns ``P-1 .. P+R-2``.
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


def response_scores(model: torch.nn.Module, batch: PairBatch, with_entropy: bool = False, top_k: int = 0) -> ResponseScores:
    """Log-prob of each response token and, optionally, the entropy and the top-k competing logits."""
    device = next(model.parameters()).device
    outputs = model(
        input_ids=batch.input_ids.to(device),
        attention_mask=batch.attention_mask.to(device),
        position_ids=batch.position_ids.to(device),
        use_cache=False,
    )
    width = batch.response_ids.shape[1]
    logits = outputs.logits[:, batch.prompt_width - 1 : batch.prompt_width - 1 + width].float()
    log_probs = F.log_softmax(logits, dim=-1)
    response_ids = batch.response_ids.to(device)
    mask = batch.response_mask.to(device)
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
    return scores


def response_logprobs(
    model: torch.nn.Module, batch: PairBatch, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-prob of each response token ``[rows, R]`` and, optionally, the entropy there; padded positions hold 0."""
    scores = response_scores(model, batch, with_entropy)
    return scores.logp, scores.entropy
