"""Model-facing text: parsing responses into actions, writing responses, and the two prompt styles."""

from __future__ import annotations

import re

from craft_pl.envs.base import PromptParts, Turn
from craft_pl.envs.response_format import action_body, format_response  # noqa: F401 (format_response: this module's API)
from craft_pl.envs.webshop.pages import admissible, parse_page
from craft_pl.envs.webshop.vocab import SEP

PROMPT_STYLES = ("compact", "verl_agent")
ACTION_RE = re.compile(r"(search|click)\[([^\[\]\n]+)\]")
"""An action: ``search[query]`` or ``click[target]``; the argument has no brackets or newline."""


def normalize_action(action: object) -> str | None:
    """``verb[arg]`` lower-cased with single spaces inside the brackets, or ``None`` if it is not an action."""
    if not isinstance(action, str):
        return None
    match = ACTION_RE.fullmatch(action.strip().lower())
    if match is None:
        return None
    argument = " ".join(match.group(2).split())
    return f"{match.group(1)}[{argument}]" if argument else None


def parse_action(text: object) -> tuple[str | None, bool]:
    """``(action, True)`` for ``<think>...</think><action>verb[arg]</action>`` (surrounding whitespace and trailing
    ``<|im_end|>``/``<|endoftext|>`` allowed, each tag exactly once, nothing between the blocks); ``(None, False)``
    for anything else. Never raises."""
    action = normalize_action(action_body(text))
    return (action, True) if action is not None else (None, False)


def _strip_instruction(observation: str) -> str:
    """Drop the search page's ``WebShop [SEP] Instruction: [SEP] <instruction> [SEP]`` head (the task says it)."""
    parts = observation.split(SEP)
    if len(parts) >= 4 and parts[0] == "WebShop" and parts[1] == "Instruction:":
        return SEP.join(parts[3:])
    return observation


def summarize(observation: str) -> str:
    """A few words standing for a past observation in compact history."""
    page = parse_page(observation)
    if page.kind == "search":
        return "search page"
    if page.kind == "results":
        return f"results page {page.page}"
    if page.kind == "item":
        return "item page"
    if page.kind == "sub":
        return "details page"
    return observation[:60]


def compact_observation(observation: str) -> tuple[str, str]:
    """``(page text, action text)`` of the compact style: one line per result (``title price [id]``, title without
    its leading brand), the item's title, price and options, and the clickables listed once (item ids are read off
    their result lines)."""
    page = parse_page(observation)
    if page.kind == "search":
        return "search page", "search[<your query>]"
    if page.kind == "results":
        # one line per result, the id last: a causal model reads the title and price before the id it then copies.
        # Titles start with the brand, which never matters to a goal: the compact lines leave it out.
        lines = "".join(f"\n{title.split(' ', 1)[-1]} {price} [{asin.lower()}]" for asin, title, price in page.results)
        buttons = [c for c in page.clickables if c in ("back to search", "< prev", "next >")]
        clicks = ", ".join(buttons + (["an item id"] if page.results else []))
        return f"results page {page.page}" + lines, f"click[x] for x in: {clicks}"
    if page.kind == "item":
        options = "".join(f"\n{name}: {', '.join(values)}" for name, values in page.options)
        return f"{page.title}, price {page.price}{options}", "click[x] for x in: " + ", ".join(page.clickables)
    if page.kind == "sub":
        return SEP.join(observation.split(SEP)[2:]), "click[x] for x in: " + ", ".join(page.clickables)
    return observation, ", ".join(admissible(page))


def compact_prompt(instruction: str, history: list[Turn], observation: str) -> PromptParts:
    lines = tuple(f"[obs] {summarize(t.observation)} [act] {t.action}\n" for t in history)
    page, actions = compact_observation(observation)
    current = f"Observation: {page}\nActions: {actions}\nRespond with <think>...</think><action>...</action>.\n"
    return PromptParts(preamble=f"Task: {instruction}\n", history=lines, current=current)


def _verl_obs(observation: str) -> str:
    """verl-agent's ``format_obs``: drop the head up to the instruction, quote each ``[SEP]`` part."""
    return SEP.join(f"'{part}'" for part in _strip_instruction(observation).split(SEP))


_VERL_INTRO = "You are an expert autonomous agent operating in the WebShop e\u2011commerce environment.\n"
_VERL_REQUEST = (
    "\n\nNow it's your turn to take one action for the current step.\n"
    "You should first reason step-by-step about the current situation, then think carefully which admissible action "
    "best advances the shopping goal. This reasoning process MUST be enclosed within <think> </think> tags.\n"
    "Once you've finished your reasoning, you should choose an admissible action for current step and present it "
    "within <action> </action> tags.\n"
)


def verl_agent_prompt(instruction: str, history: list[Turn], observation: str, step_index: int) -> PromptParts:
    actions = "\n".join(f"'{a}'," for a in admissible(parse_page(observation)))
    tail = f"Your admissible actions of the current situation are: \n[\n{actions}\n]." + _VERL_REQUEST
    if step_index == 0:
        preamble = _VERL_INTRO + f"Your task is to: {instruction}.\n"
        return PromptParts(preamble, (), f"Your current observation is: {_verl_obs(observation)}.\n" + tail)
    first = step_index - len(history) + 1
    preamble = (
        _VERL_INTRO
        + f"Your task is to: {instruction}.\n"
        + f"Prior to this step, you have already taken {step_index} step(s). Below are the most recent "
        + f"{len(history)} observations and the corresponding actions you took: "
    )
    entries = tuple(
        f"\n[Observation {first + i}: {_verl_obs(t.observation)}, Action {first + i}: '{t.action}']"
        for i, t in enumerate(history)
    )
    current = (
        f"\nYou are now at step {step_index + 1} and your current observation is: {_verl_obs(observation)}.\n" + tail
    )
    return PromptParts(preamble, entries, current)
