"""Real question files (NQ, HotpotQA, ... as Search-R1 prepares them): JSONL or Parquet rows with ``question`` and
``golden_answers``.

Search-R1's files carry ``golden_answers`` as a list (a string is taken as one answer) and a ``data_source`` such
as ``nq`` or ``hotpotqa``; the data source becomes the task type, so metrics come per source. Parquet needs
``pyarrow`` (``pip install pyarrow``).
"""

from __future__ import annotations

from pathlib import Path

from craft_pl.envs.search_qa.questions import QAItem
from craft_pl.text_entry import clean, jsonl_rows

SKILL_OF_SOURCE = {"nq": "single_hop", "triviaqa": "single_hop", "popqa": "attribute", "hotpotqa": "bridge",
                   "2wikimultihopqa": "bridge", "2wiki": "bridge", "musique": "bridge", "bamboogle": "bridge"}
"""Which built-in skill text a real data source reads (unknown sources get the general skills only)."""


def _rows(path: Path) -> list[tuple[str, object]]:
    """``(where, row)`` of every row: JSONL lines are numbered from 1, Parquet rows from 0."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as parquet
        except ImportError as error:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow (or convert it to JSONL)") from error
        return [(f"question file {path}, row {number}", row)
                for number, row in enumerate(parquet.read_table(path).to_pylist())]
    rows = [(where, row) for where, _, row in jsonl_rows(
        path, "question file", "an object with 'question' and 'golden_answers'")]
    return rows


def _answers(row: dict, where: str) -> tuple[str, ...]:
    answers = row.get("golden_answers")
    if answers is None:  # Search-R1's processed files also keep them under reward_model.ground_truth.target
        reward_model = row.get("reward_model")
        truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
        answers = truth.get("target") if isinstance(truth, dict) else None
    if isinstance(answers, str):
        answers = [answers]
    if answers is None:
        return ()
    if isinstance(answers, tuple):
        answers = list(answers)
    if not isinstance(answers, list) or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool)
                                                for a in answers):
        raise ValueError(f"{where}: 'golden_answers' must be a string or a list of strings, got {answers!r:.80}")
    return tuple(clean(str(a), "question file", where) for a in answers if str(a).strip())


def load_questions(path: str | Path, default_source: str = "file") -> list[QAItem]:
    """The questions of one JSONL (``.jsonl``/``.json`` lines) or ``.parquet`` file, in file order. Text is valid
    UTF-8 after loading (``craft_pl.text_entry``); a malformed row raises ``ValueError`` naming the file and row."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"question file {path} does not exist; give a JSONL or Parquet file with "
                                "'question' and 'golden_answers' fields")
    items = []
    for where, row in _rows(path):
        if not isinstance(row, dict):
            raise ValueError(f"{where} is a {type(row).__name__}, not an object with 'question' and 'golden_answers'")
        question, answers = row.get("question"), _answers(row, where)
        if not isinstance(question, str) or not question.strip() or not answers:
            raise ValueError(f"{where} needs a non-empty 'question' and 'golden_answers'")
        question = clean(question.strip(), "question file", where)
        if not question.endswith("?"):
            question += "?"
        source = row.get("data_source")
        source = clean(source, "question file", where) if isinstance(source, str) and source else default_source
        items.append(QAItem(question, answers, source))
    if not items:
        raise ValueError(f"question file {path} holds no questions")
    return items
