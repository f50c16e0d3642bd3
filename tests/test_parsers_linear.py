"""Every action parser runs in time linear in its input: adversarial responses of 1 MB and 4 MB take about four
times as long, never sixteen (quadratic) or worse (a backtracking regex took minutes on 1 MB).

Ratios, not absolute times, so the test holds on slow or busy machines. Times are this thread's CPU time (a busy
machine pauses the thread; CPU time does not count the pause), the best of a few runs, small and large inputs
taking turns.
"""

import random
import sys
import time
from pathlib import Path

import pytest

from craft_pl.envs.search_qa import SearchQAEnv
from craft_pl.envs.webshop import WebShopEnv

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SMALL, LARGE = 1 << 20, 4 << 20
"""Input sizes in characters (1 MB and 4 MB of ASCII)."""
MAX_RATIO = 8.0
"""time(LARGE) / time(SMALL): about 4 when linear, 16 when quadratic; 8 leaves room for cache and timer noise."""
NOISE_FLOOR_S = 2e-3
"""Below this, timer and scheduler noise dominate: the ratio is taken against at least this much (a quadratic
parse of 1 MB takes seconds, so the floor hides nothing)."""
REPEATS = 5
VALID = "<think>ok</think><action>1</action>"
"""Well-formed for the example; an invalid command for WebShop, a valid one for ALFWorld."""


def _tile(unit: str, size: int) -> str:
    """``unit`` repeated to about ``size`` characters."""
    return unit * max(1, size // len(unit))


SHAPES = {
    "valid_action_then_spaces": lambda n: VALID + " " * n,
    "valid_action_then_spaces_then_junk": lambda n: VALID + " " * n + "x",
    "spaces_then_junk": lambda n: " " * n + "x",
    "unclosed_action_tags": lambda n: _tile("<action>", n),
    "think_openings": lambda n: _tile("<think>", n) + "</think><action>1</action>",
    "nested_tags": lambda n: _tile("<think><action><search><answer>", n // 2)
    + _tile("</answer></search></action></think>", n // 2),
    "closing_action_run": lambda n: "<think>ok</think><action>1" + _tile("</action>", n),
    "end_markers": lambda n: VALID + _tile("<|im_end|> <|endoftext|>\n", n),
    "long_think": lambda n: "<think>" + _tile("so I ", n) + "</think><action>1</action><|im_end|>",
    "long_search_query": lambda n: "<think>x</think><search>" + _tile("who is it ", n) + "</search>",
    "search_openings": lambda n: _tile("<search> ", n) + "</search>",
    "random_bytes": lambda n: random.Random(n).randbytes(n).decode("latin-1"),
}


@pytest.fixture(scope="module")
def parsers():
    """Each environment's ``parse_action`` (ALFWorld's module-level parser: its env generates games)."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        from guess_number import GuessNumberEnv
    finally:
        sys.path.remove(str(EXAMPLES))
    found = {"webshop": WebShopEnv().parse_action, "search_qa": SearchQAEnv(num_entities=50).parse_action,
             "guess_number": GuessNumberEnv().parse_action}
    try:
        from craft_pl.envs.alfworld.text import parse_action as alfworld_parse_action
        found["alfworld"] = alfworld_parse_action
    except ImportError:  # the alfworld extra is missing: the other parsers are still checked
        pass
    yield found
    for name in [m for m in sys.modules if m == "guess_number" or m.startswith("guess_number.")]:
        del sys.modules[name]


def _best_times(parse, small: str, large: str) -> tuple[float, float]:
    """The fastest of ``REPEATS`` parses of each input, alternating between them."""
    best = {small: float("inf"), large: float("inf")}
    for _ in range(REPEATS):
        for text in (small, large):
            start = time.thread_time()
            parse(text)
            best[text] = min(best[text], time.thread_time() - start)
    return best[small], best[large]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_parse_time_grows_linearly(parsers, shape):
    small, large = SHAPES[shape](SMALL), SHAPES[shape](LARGE)
    times = {name: _best_times(parse, small, large) for name, parse in parsers.items()}
    slow = {name: f"{t_small * 1e3:.2f} ms -> {t_large * 1e3:.2f} ms"
            for name, (t_small, t_large) in times.items() if t_large / max(t_small, NOISE_FLOOR_S) > MAX_RATIO}
    assert not slow, f"superlinear parse of {shape!r} (1 MB -> 4 MB): {slow}"
