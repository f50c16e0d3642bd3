"""Prompt ids within a token budget, for the student and for the teacher (the one place teacher prompts are built).

History goes first: the oldest history entries are dropped until the prompt fits, and only a prompt that is still
too long without history is cut from the left. The teacher's prompt is the privileged text followed by the student's
prompt unchanged, under a larger budget (what the model's context leaves after the response).
"""

from __future__ import annotations

from dataclasses import dataclass

from craft_pl.batch import PromptParts


@dataclass
class EncodedPrompt:
    ids: list[int]
    history_dropped: int
    """Oldest history entries left out to fit the budget."""
    cut: bool
    """Whether the prompt was still too long without history and lost tokens from its start."""


def encode_prompt_parts(policy, parts: PromptParts, budget: int | None = None) -> EncodedPrompt:
    """Prompt ids within ``budget`` tokens (default: the policy's prompt budget), dropping the oldest history
    entries first and cutting from the left only when no history is left."""
    budget = budget or policy.max_prompt_tokens
    keep = len(parts.history)
    ids = policy.encode_prompt(parts.render(), budget=10**9)
    while len(ids) > budget and keep > 0:
        keep -= 1
        ids = policy.encode_prompt(parts.render(keep_history=keep), budget=10**9)
    return EncodedPrompt(ids[-budget:], len(parts.history) - keep, len(ids) > budget)


def teacher_budget(policy, max_new_tokens: int) -> int:
    """Token budget of a privileged prompt: what the model's context leaves after the response."""
    return max(policy.max_prompt_tokens, policy.max_context_tokens - max_new_tokens)


def teacher_prompt(policy, parts: PromptParts, privileged_context: str, max_new_tokens: int) -> EncodedPrompt:
    """The teacher's view of a student prompt, encoded within the teacher's budget."""
    return encode_prompt_parts(policy, parts.with_context(privileged_context), teacher_budget(policy, max_new_tokens))
