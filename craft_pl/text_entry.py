"""Text at every entry is valid UTF-8 after entry. Observations, prompts, corpus passages, question files and retrieval
answers can carry code points no UTF-8 text holds (a lone surrogate such as ``"\\ud800"``, from a JSON escape or a
``surrogateescape`` decode) or bytes that are not UTF-8; one of them used to kill a run in the tokenizer. Each is
replaced by U+FFFD at entry and counted per entry (``replaced``); the first replacement of each entry, and every
tenfold count after it, is logged as a warning.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

log = logging.getLogger(__name__)

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")

replaced: Counter = Counter()
"""Code points replaced so far in this process, by entry (``observation``, ``prompt``, ``corpus``, ...)."""


def _count(entry: str, count: int, where: str) -> None:
    if not count:
        return
    before = replaced[entry]
    replaced[entry] += count
    if before == 0 or len(str(before)) != len(str(replaced[entry])):
        log.warning("text entry %s: replaced %d code point(s) that are not valid UTF-8 with U+FFFD%s (%d so far)",
                    entry, count, f" in {where}" if where else "", replaced[entry])


def clean(text: str, entry: str, where: str = "") -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (counted under ``entry``); unchanged text is returned
    as is (the common case costs one ``encode``)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        cleaned, count = _SURROGATE.subn(REPLACEMENT, text)
        _count(entry, count, where)
        return cleaned


def decode(data: bytes, entry: str, where: str = "") -> str:
    """``data`` decoded as UTF-8, invalid bytes replaced by U+FFFD (counted under ``entry``)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
        _count(entry, text.count(REPLACEMENT) - data.count(REPLACEMENT.encode()), where)
        return text


def clean_tree(value, entry: str, where: str = ""):
    """Every string in nested lists, tuples and dicts (keys too) cleaned as ``clean`` does."""
    if isinstance(value, str):
        return clean(value, entry, where)
    if isinstance(value, dict):
        return {clean_tree(k, entry, where): clean_tree(v, entry, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(clean_tree(v, entry, where) for v in value)
    return value


def jsonl_rows(path, entry: str, expected: str):
    """``(where, line number, object)`` for every non-empty line of the JSONL file ``path``, each line decoded to valid
    UTF-8 first (``decode``); a line that is not JSON raises ``ValueError`` naming the file, the line and ``expected``
    (what a line must be)."""
    import json

    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{entry} {path}, line {number}"
            line = decode(raw, entry, where)
            if not line.strip():
                continue
            try:
                yield where, number, json.loads(line)
            except ValueError as error:
                raise ValueError(f"{where} is not JSON ({error}); each line must be {expected}") from None
