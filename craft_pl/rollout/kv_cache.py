"""The KV cache of a decoding batch: left-padded prompts, one prefill per distinct prompt, and the cache every row
of the batch decodes from (each prompt's keys/values copied to the rows that have it, in buffers with room for the
whole response so that a decoding step writes in place)."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
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


def is_plain(cache) -> bool:
    """Whether ``cache`` is made of plain dynamic layers only (those alone can be re-padded and preallocated)."""
    return cache is not None and all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


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
        if len(buckets) > 1 and not is_plain(out.cache):
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
    if not is_plain(cache):
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
        cache.layers[number] = PreallocatedLayer(*buffers, width)
    return cache, logits
