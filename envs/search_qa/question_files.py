"""Real question files (NQ, HotpotQA, ... as Search-R1 prepares them): JSONL or Parquet rows with ``question`` and
``golden_answers``.

Search-R1's files carry ``golden_answers`` as a list (a string is taken as one answer) and a ``data_source`` such
as ``nq`` or ``hotpotqa``; the data source becomes the task type, so metrics come per source. Parquet needs
``pyarrow`` (``pip install pyarrow``).
"""

from __future__ import annotations

import json
from pathlib import Path

from craft_pl.envs.search_qa.questions import QAItem

SKILL_OF_SOURCE = {"nq": "single_hop", "triviaqa": "single_hop", "popqa": "attribute", "hotpotqa": "bridge",
                   "2wikimultihopqa": "bridge", "2wiki": "bridge", "musique": "bridge", "bamboogle": "bridge"}
"""Which built-in skill text a real data source reads (unknown sources get the general skills only)."""


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as parquet
        except ImportError as error:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow (or convert it to JSONL)") from error
        return parquet.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _answers(row: dict) -> tuple[str, ...]:
    answers = row.get("golden_answers")
    if answers is None:  # Search-R1's processed files also keep them under reward_model.ground_truth.target
        answers = ((row.get("reward_model") or {}).get("ground_truth") or {}).get("target")
    if isinstance(answers, str):
        answers = [answers]
    return tuple(str(a) for a in (answers or []))


def load_questions(path: str | Path, default_source: str = "file") -> list[QAItem]:
    """The questions of one JSONL (``.jsonl``/``.json`` lines) or ``.parquet`` file, in file order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"question file {path} does not exist; give a JSONL or Parquet file with "
                                "'question' and 'golden_answers' fields")
    items = []
    for number, row in enumerate(_rows(path)):
        question, answers = row.get("question"), _answers(row)
        if not isinstance(question, str) or not question.strip() or not answers:
            raise ValueError(f"{path}: row {number} needs a non-empty 'question' and 'golden_answers'")
        question = question.strip()
        if not question.endswith("?"):
            question += "?"
        items.append(QAItem(question, answers, str(row.get("data_source") or default_source)))
    if not items:
        raise ValueError(f"question file {path} holds no questions")
    return items
