"""The ``<think>...</think><action>...</action>`` response format that WebShop and ALFWorld prompts ask for."""

from __future__ import annotations

import re

THINK = "ok"
"""The think text of expert demonstrations."""
_TAGS = ("<think>", "</think>", "<action>", "</action>")
_END_MARKERS = ("<|im_end|>", "<|endoftext|>")
_REVERSED_TAIL = re.compile("(?:\\s|" + "|".join(re.escape(marker[::-1]) for marker in _END_MARKERS) + ")*+")
"""On the reversed text: the trailing run of whitespace and end markers (anchored, possessive: linear time)."""


def action_body(text: object) -> str | None:
    """The raw text inside ``<action>...</action>`` of a well-formed response, else ``None``; never raises.

    Well-formed: each tag exactly once, the think block first, nothing between the blocks or around them but
    whitespace and trailing end-of-text markers (``<|im_end|>``, ``<|endoftext|>``, decoded after the response).
    """
    if not isinstance(text, str):
        return None
    body = _without_end_markers(text.strip())
    if any(body.count(tag) != 1 for tag in _TAGS):
        return None
    if not (body.startswith("<think>") and body.endswith("</action>")):
        return None
    think_end, action_start = body.index("</think>"), body.index("<action>")
    if action_start < think_end or body[think_end + len("</think>") : action_start].strip():
        return None
    return body[action_start + len("<action>") : -len("</action>")]


def _without_end_markers(text: str) -> str:
    """``text`` without its trailing end markers and the whitespace around them, in one linear pass (cutting one
    marker at a time and re-stripping copies the text each time: quadratic on many markers)."""
    if not text.endswith(_END_MARKERS):
        return text.rstrip()
    tail = _REVERSED_TAIL.match(text[::-1]).end()
    return text[: len(text) - tail]


def format_response(action: str) -> str:
    """A well-formed response carrying ``action``, with a one-word think."""
    return f"<think>{THINK}</think><action>{action}</action>"
