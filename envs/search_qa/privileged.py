"""Privileged context for the teacher: skill text per data source (``skills/*.md``) or a per-task hint."""

from __future__ import annotations

from pathlib import Path

from craft_pl.envs.search_qa.question_files import SKILL_OF_SOURCE
from craft_pl.envs.search_qa.questions import DATA_SOURCES, QAItem
from craft_pl.envs.skills import general_and_specific

SKILL_DIR = Path(__file__).resolve().parent / "skills"
PRIVILEGED_MODES = ("skill", "hint")


def skill_text(data_source: str) -> str:
    """General skills followed by those of the question kind (real sources map to a kind, e.g. nq -> single_hop)."""
    kind = data_source if data_source in DATA_SOURCES else SKILL_OF_SOURCE.get(data_source.lower())
    return general_and_specific(SKILL_DIR, kind)


def hint_text(item: QAItem) -> str:
    """The searches that find each needed passage, in order, then the answer."""
    lines = ["Hint:"]
    lines += [f"search {i + 1} -> <search>{query}</search>" for i, query in enumerate(item.queries)]
    lines.append(f"then -> <answer>{item.golden_answers[0]}</answer>")
    return "\n".join(lines) + "\n"
