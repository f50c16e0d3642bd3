"""``RolloutBatch``: one row per (trajectory, turn), the unit every loss and pillar works on."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from craft_pl.envs.base import PromptParts


@dataclass
class RolloutBatch:
    """Rows of one RL step (or a mini-batch of them).

    Per-row tensors are ``[rows]``; per-token tensors are ``[rows, tokens]`` with ``response_mask`` marking real
    response tokens. ``extras`` holds per-row tensors that objectives and pillars add in ``prepare``.
    """

    prompt_ids: list[list[int]]
    prompt_parts: list[PromptParts]
    """The student prompt of each row in pieces (the teacher prompt is built from them)."""
    history_dropped: list[int]
    """History entries the student prompt of each row left out to fit its budget."""
    response_ids: list[list[int]]
    response_mask: torch.Tensor
    group_ids: torch.Tensor
    trajectory_ids: torch.Tensor
    turn_index: torch.Tensor
    rewards: torch.Tensor
    """Episode reward minus the invalid-action penalty of this row's turn (verl-agent)."""
    valid_action: torch.Tensor
    task_types: list[str]
    privileged_context: list[str]
    """Privileged text per row (empty when the method needs no teacher)."""
    sampling_logp: torch.Tensor
    """Log-probs under the distribution that sampled the tokens (temperature / top-p applied)."""
    old_logp: torch.Tensor | None = None
    """No-grad forward of the rollout-time weights (the PPO ratio's denominator)."""
    ref_logp: torch.Tensor | None = None
    """Base weights with adapters disabled (or the frozen reference copy)."""
    teacher_logp: torch.Tensor | None = None
    """Same rollout-time weights (or the teacher adapter), prompt with the privileged context prepended."""
    advantages: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    num_tokens: int | None = None
    """Valid tokens over which this mini-batch's token-mean is taken (set when mini-batches are cut)."""

    @property
    def num_rows(self) -> int:
        return len(self.prompt_ids)

    def select(self, index: torch.Tensor) -> "RolloutBatch":
        """The rows ``index`` (a 1-D long tensor), in that order."""
        picked = {}
        positions = index.tolist()
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                picked[f.name] = value[index]
            elif isinstance(value, list):
                picked[f.name] = [value[i] for i in positions]
            elif isinstance(value, dict):
                picked[f.name] = {key: tensor[index] for key, tensor in value.items()}
            else:
                picked[f.name] = value
        return RolloutBatch(**picked)
