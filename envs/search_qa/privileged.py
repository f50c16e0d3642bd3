"""Privileged context for the teacher: skill text per data source (``skills/*.md``) or a per-task hint, correct
(``hint_text``) or plausible but wrong (``wrong_hint_text``, for the tasks ``hint_reliability`` makes unreliable)."""

from __future__ import annotations

import zlib
from pathlib import Path

from craft_pl.envs.search_qa.question_files import SKILL_OF_SOURCE
from craft_pl.envs.search_qa.questions import DATA_SOURCES, QAItem, parse_question
from craft_pl.envs.search_qa.text import exact_match
from craft_pl.envs.search_qa.world import World
from craft_pl.envs.skills import general_and_specific

SKILL_DIR = Path(__file__).resolve().parent / "skills"
PRIVILEGED_MODES = ("skill", "hint")


def skill_text(data_source: str) -> str:
    """General skills followed by those of the question kind (real sources map to a kind, e.g. nq -> single_hop)."""
    kind = data_source if data_source in DATA_SOURCES else SKILL_OF_SOURCE.get(data_source.lower())
    return general_and_specific(SKILL_DIR, kind)


def hint_text(item: QAItem) -> str:
    """The searches that find each needed passage, in order, then the answer."""
    return _render(item.queries, item.golden_answers[0])


def wrong_hint_text(item: QAItem, world: World) -> str:
    """A plausible but wrong hint (``hint_reliability``), in ``hint_text``'s lines: for a comparison, the same
    searches and the *later* of the two entities; otherwise the last search swaps the entity holding the answer for
    another of its kind, a look-alike (a shared name word) where one exists, and the answer is that entity's fact,
    chosen so that it matches no golden answer. A question outside the world's templates gets ``unknown``.
    Deterministic: the choice among equals is a hash of the question."""
    golden, plan = item.golden_answers, parse_question(item.question)
    draw = zlib.crc32(f"search_qa-wrong-hint:{item.question}".encode())
    if plan is not None and plan.other:
        later = [query for query in item.queries if not exact_match(query, golden)]
        return _render(item.queries, later[0] if later else "unknown")
    last = item.queries[-1] if item.queries else ""
    if plan is None or last not in world.entities:
        return _render(item.queries, "unknown")
    others = [name for name in world.by_kind[world.entities[last].kind] if name != last
              and not exact_match(world.entities[name].facts.get(plan.relation, golden[0]), golden)]
    look_alikes = [name for name in others if set(name.split()) & (set(last.split()) - {"The"})]
    pool = look_alikes or others
    if not pool:
        return _render(item.queries, "unknown")
    swapped = pool[draw % len(pool)]
    return _render(item.queries[:-1] + (swapped,), world.entities[swapped].facts[plan.relation])


def _render(queries: tuple[str, ...], answer: str) -> str:
    lines = ["Hint:"]
    lines += [f"search {i + 1} -> <search>{query}</search>" for i, query in enumerate(queries)]
    lines.append(f"then -> <answer>{answer}</answer>")
    return "\n".join(lines) + "\n"
