"""A malformed action is an invalid action, never an exception: seeded fuzzing of every environment's
``parse_action`` with responses built from tags, broken tags, action words, brackets, unicode, control characters
and very long tokens, many of them mutations of well-formed responses.

The contract checked: a ``(str | None, bool)`` pair, ``None`` exactly when not well-formed, and a parsed action that
survives ``format_response`` -> ``parse_action`` unchanged. The linear-time parsers are also checked against their
former (backtracking / quadratic) definitions on short inputs, which they must match exactly.
"""

import random
import re
import sys
from pathlib import Path

import pytest

from craft_pl.envs import response_format
from craft_pl.envs.search_qa import SearchQAEnv
from craft_pl.envs.webshop import WebShopEnv

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CASES_PER_ENV = 3000
SEED = 20240611
REFERENCE_MAX_CHARS = 400
"""The former definitions are quadratic: compare with them on inputs this short only."""

TAGS = ["<think>", "</think>", "<action>", "</action>", "<search>", "</search>", "<answer>", "</answer>",
        "<|im_end|>", "<|endoftext|>"]
BROKEN_TAGS = ["<", ">", "</", "/>", "<think", "think>", "</act", "ion>", "<|", "|>", "<|im_end", "<<action>>",
               "<ACTION>", "< action>", "<action/>", "</>", "<>"]
ACTION_WORDS = ["search[", "click[", "search[red shoes]", "click[buy now]", "click[< prev]", "click[next >]",
                "go to desk 1", "take apple 1 from countertop 2", "look", "who founded acme", "Paris", "7", "42",
                "9999", "12345", "-3", "0x1f", "1.5", "ok"]
BRACKETS = ["[", "]", "[]", "[[", "]]", "()", "{", "}"]
WHITESPACE = ["", " ", "  ", "\n", "\t", "\r\n", "\x0b\x0c", "\u00a0", "\u2028", "\u3000", "\x1c", "\x85"]
UNICODE = ["é", "İ", "ß", "ẞ", "ﬁ", "١٢", "𝟙", "\u200b", "\U0001f600", "e\u0301", "\ud800", "\udfff",
           "\ufeff"]
CONTROL = ["\x00", "\x01", "\x1b[31m", "\x7f", "\x08"]
FRAGMENTS = TAGS + BROKEN_TAGS + ACTION_WORDS + BRACKETS + WHITESPACE + UNICODE + CONTROL
LONG_TOKEN_UNITS = ["a", " ", "9", "<action>", "</action>", "<think>", "<|im_end|>", "\U0001f600", "[", "\x00"]
WELL_FORMED = [
    "<think>ok</think><action>search[red shoes]</action>",
    "<think>ok</think><action>click[buy now]</action><|im_end|>",
    "  <think>\nhm</think>\n<action> go to desk 1 </action>\n",
    "<think>ok</think><search>who founded acme</search>",
    "<think>ok</think><answer>Paris</answer><|endoftext|>",
    "<think>ok</think><action>7</action>",
    "<think></think> <action> 42 </action> <|im_end|> ",
]
"""Responses well-formed for one environment or another; mutations of them reach deep into the parsers."""
NOT_TEXT = [None, 0, 7, 1.5, b"<think>ok</think><action>7</action>", ["<think>"], {"action": "look"}, object()]


def _long_token(rng: random.Random) -> str:
    return rng.choice(LONG_TOKEN_UNITS) * rng.randint(500, 20_000)


def _fragment(rng: random.Random) -> str:
    return _long_token(rng) if rng.random() < 0.03 else rng.choice(FRAGMENTS)


def _mutated(rng: random.Random, text: str) -> str:
    """``text`` with up to three random edits: insert a fragment, delete a span, duplicate a span, truncate."""
    for _ in range(rng.randint(0, 3)):
        i, j = sorted(rng.randrange(len(text) + 1) for _ in range(2))
        edit = rng.randrange(4)
        if edit == 0:
            text = text[:i] + _fragment(rng) + text[i:]
        elif edit == 1:
            text = text[:i] + text[j:]
        elif edit == 2:
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:j]
    return text


def fuzz_responses(seed: int, count: int) -> list[str]:
    """``count`` responses: a few empty, about half mutated well-formed responses, the rest fragment soup."""
    rng = random.Random(seed)
    responses = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.02:
            responses.append("")
        elif roll < 0.5:
            responses.append(_mutated(rng, rng.choice(WELL_FORMED)))
        else:
            responses.append("".join(_fragment(rng) for _ in range(rng.randint(1, 16))))
    return responses


@pytest.fixture(scope="module")
def guess_number_env():
    """The user example, imported as ``PYTHONPATH=examples`` would."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from guess_number import GuessNumberEnv
    finally:
        sys.path.remove(str(EXAMPLES))
    yield GuessNumberEnv()
    for name in [m for m in sys.modules if m == "guess_number" or m.startswith("guess_number.")]:
        del sys.modules[name]


@pytest.fixture(scope="module", params=["webshop", "search_qa", "alfworld", "guess_number"])
def parser(request):
    """``(parse_action, format_response)`` of one environment (ALFWorld's module-level pair: its env generates
    games when built; both methods of the env only forward to these)."""
    if request.param == "alfworld":
        alfworld_text = pytest.importorskip("craft_pl.envs.alfworld.text")
        return alfworld_text.parse_action, alfworld_text.format_response
    env = {"webshop": WebShopEnv, "search_qa": lambda: SearchQAEnv(num_entities=50),
           "guess_number": lambda: request.getfixturevalue("guess_number_env")}[request.param]()
    return env.parse_action, env.format_response


def test_malformed_responses_are_invalid_actions_never_exceptions(parser):
    parse_action, format_response = parser
    well_formed_count = 0
    for text in fuzz_responses(SEED, CASES_PER_ENV) + NOT_TEXT:
        result = parse_action(text)
        assert isinstance(result, tuple) and len(result) == 2, (text, result)
        action, well_formed = result
        assert type(well_formed) is bool, (text, result)
        assert (action is None) == (not well_formed), (text, result)
        if well_formed:
            well_formed_count += 1
            assert isinstance(action, str) and action, (text, result)
            assert parse_action(format_response(action)) == (action, True), (text, result)
    assert well_formed_count >= 30, "the fuzzing no longer reaches this parser's well-formed path"


# --------------------------------------------------- the former definitions, kept as references on short inputs
def _former_action_body(text: object) -> str | None:
    """``response_format.action_body`` before it was made linear (stripped end markers one at a time)."""
    if not isinstance(text, str):
        return None
    body = text.strip()
    while body.endswith(("<|im_end|>", "<|endoftext|>")):
        body = body[: body.rindex("<|")].rstrip()
    if any(body.count(tag) != 1 for tag in ("<think>", "</think>", "<action>", "</action>")):
        return None
    if not (body.startswith("<think>") and body.endswith("</action>")):
        return None
    think_end, action_start = body.index("</think>"), body.index("<action>")
    if action_start < think_end or body[think_end + len("</think>") : action_start].strip():
        return None
    return body[action_start + len("<action>") : -len("</action>")]


_FORMER_GUESS_ACTION = re.compile(r"\s*<think>[^<]*</think>\s*<action>\s*(\d{1,4})\s*</action>\s*(<\|im_end\|>)?\s*")
"""The example's regex before it was made linear (backtracked over trailing whitespace)."""


def _short_fuzz_responses() -> list[str]:
    return [text for text in fuzz_responses(SEED + 1, 4 * CASES_PER_ENV) if len(text) <= REFERENCE_MAX_CHARS]


def test_action_body_matches_its_former_definition():
    for text in _short_fuzz_responses() + NOT_TEXT:
        assert response_format.action_body(text) == _former_action_body(text), text


def test_example_parser_matches_its_former_definition(guess_number_env):
    for text in _short_fuzz_responses():
        match = _FORMER_GUESS_ACTION.fullmatch(text)
        assert guess_number_env.parse_action(text) == ((match.group(1), True) if match else (None, False)), text
