"""Model-facing text of Search-QA: projecting a response to an action, exact match, and the two prompt styles."""

from __future__ import annotations

import re
import string

from craft_pl.envs.base import PromptParts, Turn
from craft_pl.envs.response_format import THINK

PROMPT_STYLES = ("compact", "search_r1")
ADMISSIBLE = ["<search> your query </search>", "<answer> your answer </answer>"]
INVALID_OBSERVATION = (
    "\nMy previous action is invalid. If I want to search, I should put the query between <search> and </search>. "
    "If I want to give the final answer, I should put the answer between <answer> and </answer>. Let me try again.\n"
)
"""What an invalid step shows (Search-R1's message)."""
_END_MARKERS = ("<|im_end|>", "<|endoftext|>")
_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def parse_action(text: object) -> tuple[str | None, bool]:
    """Search-R1's projection: cut after the first ``</search>`` or ``</answer>``; the action is the first
    ``<search>q</search>``, else the first ``<answer>a</answer>``. Invalid (``(None, False)``): neither tag, both
    kinds, a tag more than once, or an empty query/answer. Returns ``("<search>q</search>", True)`` with single
    spaces inside. Never raises."""
    try:
        if not isinstance(text, str):
            return None, False
        ends = [i + len(tag) for tag in ("</search>", "</answer>") if (i := text.find(tag)) >= 0]
        if not ends:
            return None, False
        body = text[: min(ends)]
        searches, answers = body.count("<search>"), body.count("<answer>")
        if (searches and answers) or searches > 1 or answers > 1:
            return None, False
        match = _ACTION.search(body)  # linear: at most one opening tag is left to scan from (checked above)
        if match is None:
            return None, False
        argument = " ".join(match.group(2).split())
        if not argument or "<" in argument or ">" in argument:
            return None, False
        return f"<{match.group(1)}>{argument}</{match.group(1)}>", True
    except Exception:  # noqa: BLE001 - the contract is "never raises"
        return None, False


def split_action(action: str) -> tuple[str, str]:
    """``("search" | "answer", argument)`` of a parsed action."""
    match = _ACTION.fullmatch(action)
    if match is None:
        raise ValueError(f"not a parsed Search-QA action: {action!r}")
    return match.group(1), match.group(2)


def format_response(action: str) -> str:
    """A well-formed response carrying ``action`` (``<search>q</search>`` or ``<answer>a</answer>``)."""
    return f"<think>{THINK}</think>{action}"


def normalize_answer(text: str) -> str:
    """Search-R1 / SQuAD normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golden_answers: tuple[str, ...] | list[str]) -> bool:
    """Whether the normalised prediction equals any normalised golden answer."""
    predicted = normalize_answer(prediction)
    return any(predicted == normalize_answer(gold) for gold in golden_answers)


def compact_prompt(question: str, history: list[Turn], observation: str) -> PromptParts:
    """Few words for tiny models: the question, past (results, action) pairs, the latest results."""
    lines = tuple(f"[obs] {_short(t.observation)}\n[act] {t.action}\n" for t in history)
    current = (f"Observation: {_short(observation)}\n"
               "Respond with <think>...</think> then <search>query</search> or <answer>answer</answer>.\n")
    return PromptParts(preamble=f"Question: {question}\n", history=lines, current=current)


def _short(observation: str) -> str:
    body = observation.strip()
    return body if body else "none yet"


_INTRO = "You are an expert agent tasked with answering the given question step-by-step.\n"
_REQUEST = (
    "\nNow it's your turn to respond for the current step.\n"
    "You should first conduct a reasoning process. This process MUST be enclosed within <think> </think> tags.\n"
    "After completing your reasoning, choose only one of the following actions (do not perform both):\n"
    "(1) If any required knowledge is missing or uncertain, you MUST call a search engine to get more external "
    "information using format: <search> your query </search>.\n"
    "(2) Only if you have sufficient information to answer the question with high confidence, provide your final "
    "answer within <answer> </answer> tags, without detailed illustrations. For example, <answer>Beijing</answer>.\n"
)


def search_r1_prompt(question: str, history: list[Turn], observation: str, step_index: int) -> PromptParts:
    """The SDAR / verl-agent search template: question, the interaction history (past queries and the
    ``<information>`` they returned), then the request to think and search or answer."""
    preamble = _INTRO + f"Your question: {question}\n"
    if step_index == 0:
        return PromptParts(preamble, (), _REQUEST)
    preamble += (
        f"Prior to this step, you have already taken {step_index} step(s). Below is the interaction history where "
        "<search> </search> wrapped your past search queries and <information> </information> wrapped the "
        "corresponding search results returned by the external search engine. History:\n"
    )
    entries = tuple((f"{t.observation.strip()}\n" if t.observation.strip() else "") + f"{t.action}\n" for t in history)
    return PromptParts(preamble, entries, f"{observation.strip()}\n" + _REQUEST)
