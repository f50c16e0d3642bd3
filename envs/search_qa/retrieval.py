"""Retrievers: the ``Retriever`` interface, in-process BM25 (bm25s), and how results become ``<information>``.

A retriever maps a batch of queries to the top-k passages of each, as ``Passage`` objects (``title`` and ``text``;
``contents`` is ``title\\ntext`` as in Search-R1's wiki-18 corpus). ``HTTPRetriever`` (``http.py``) asks a
Search-R1-style server instead.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from pathlib import Path

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from craft_pl.envs.search_qa.world import Passage
from craft_pl.text_entry import clean, jsonl_rows

_STOP = frozenset(STOPWORDS_EN)
_WORD = re.compile(r"[a-z0-9]+")
_CACHE_LIMIT = 100_000
MAX_CACHE_BYTES = 64 * 2**20
"""Default bound of the ranking cache's memory (64 MiB)."""


def corpus_digest(passages: list[Passage]) -> str:
    """What a corpus is, in 16 hex digits: a digest of every passage's id and contents, in order (a retrieval server
    reports it, a client compares it with the corpus of the world it is configured for)."""
    digest = hashlib.sha256()
    for passage in passages:
        digest.update(json.dumps([passage.doc_id, passage.contents]).encode("utf-8"))
    return digest.hexdigest()[:16]


def describe_world(world: dict) -> str:
    """``1000 entities, seed 0, corpus digest 0123...`` (or the corpus file) for an identity ``world_identity`` made."""
    where = f"corpus {world['corpus']}" if world.get("corpus") else \
        f"{world.get('num_entities', '?')} entities, seed {world.get('seed', '?')}"
    return f"{where}, corpus digest {world.get('corpus_digest', '?')}"


def world_identity(passages: list[Passage], num_entities: int | None = None, seed: int | None = None,
                   corpus: str | None = None) -> dict:
    """What a retrieval server serves, as its ``GET /health`` reports it: the corpus digest, and the built-in world's
    entity count and seed (or the corpus file it read)."""
    identity: dict = {"corpus_digest": corpus_digest(passages), "passages": len(passages)}
    if corpus is not None:
        identity["corpus"] = corpus
    else:
        identity.update(num_entities=num_entities, seed=seed)
    return identity


def entry_bytes(key: tuple[str, ...], value: tuple) -> int:
    """What a cached ranking costs in memory, over-estimated: the key's tuple and strings, the value's pairs."""
    return 64 + 8 * len(key) + sum(49 + len(token) for token in key) + 64 + 120 * len(value)


def tokenize(text: str) -> tuple[str, ...]:
    """Search tokens: lower-cased words and numbers without English stopwords (no stemming)."""
    return tuple(w for w in _WORD.findall(text.lower()) if w not in _STOP)


class Retriever(ABC):
    """Top-k passages for each of a batch of queries."""

    @abstractmethod
    def retrieve(self, queries: list[str], top_k: int) -> list[list[Passage]]:
        """One list per query, best passage first, at most ``top_k`` long."""

    def close(self) -> None:
        """Release resources (connections)."""


class BM25Retriever(Retriever):
    """BM25 (bm25s, Lucene defaults) over ``title + text`` of every passage; deterministic ties (corpus order).

    Rankings are cached per token sequence, so one retriever shared by all environments answers repeated queries
    (sibling rollouts, the expert) at dictionary speed. The cache is bounded by its memory (``max_cache_bytes``): the
    oldest entries go first, and a query too long to be worth caching (over 1/16 of the bound) is not cached.
    """

    def __init__(self, passages: list[Passage], max_cache_bytes: int = MAX_CACHE_BYTES) -> None:
        if not passages:
            raise ValueError("BM25Retriever needs at least one passage")
        self.passages = list(passages)
        self._index = bm25s.BM25()
        self._index.index([list(tokenize(p.contents)) for p in self.passages], show_progress=False)
        self._cache: dict[tuple[str, ...], tuple[tuple[int, float], ...]] = {}
        self.max_cache_bytes = int(max_cache_bytes)
        self.cache_bytes = 0
        """What the cached rankings cost (``entry_bytes`` summed); at most ``max_cache_bytes``."""

    def ranking(self, query: str, top_k: int) -> tuple[tuple[int, float], ...]:
        """``(passage index, score)`` of the best ``top_k`` passages with a positive score."""
        tokens = tokenize(query)
        key = tokens + (f"#{top_k}",)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        result: tuple[tuple[int, float], ...] = ()
        known = [t for t in tokens if t in self._index.vocab_dict]
        if known:
            scores = np.asarray(self._index.get_scores(known), dtype=np.float64)
            positive = np.flatnonzero(scores > 0)
            order = positive[np.lexsort((positive, -scores[positive]))][:top_k]
            result = tuple((int(i), float(scores[i])) for i in order)
        self._remember(key, result)
        return result

    def _remember(self, key: tuple[str, ...], result: tuple) -> None:
        cost = entry_bytes(key, result)
        if cost > self.max_cache_bytes // 16:
            return
        while self._cache and (self.cache_bytes + cost > self.max_cache_bytes or len(self._cache) >= _CACHE_LIMIT):
            oldest = next(iter(self._cache))
            self.cache_bytes -= entry_bytes(oldest, self._cache.pop(oldest))
        self._cache[key] = result
        self.cache_bytes += cost

    def retrieve(self, queries: list[str], top_k: int) -> list[list[Passage]]:
        return [[self.passages[i] for i, _ in self.ranking(q, top_k)] for q in queries]

    def clear_cache(self) -> None:
        """Forget cached rankings (benchmarks time uncached search with it)."""
        self._cache.clear()
        self.cache_bytes = 0


def load_corpus(path: str | Path) -> list[Passage]:
    """Passages of a JSONL corpus in Search-R1's wiki-18 format: one ``{"id": ..., "contents": "Title\\ntext"}`` per
    line (a quoted title, as wiki-18 writes it, is unquoted). Text is valid UTF-8 after loading (bytes that are not
    UTF-8 and lone surrogates replaced, counted: ``craft_pl.text_entry``); a line that is not such an object raises
    ``ValueError`` naming the file and the line."""
    passages = []
    for where, number, row in jsonl_rows(path, "corpus", '{"id": ..., "contents": "Title\\ntext"}'):
        if not isinstance(row, dict) or not isinstance(row.get("contents"), str):
            found = type(row).__name__ if not isinstance(row, dict) else (
                "no 'contents'" if "contents" not in row else f"contents {type(row['contents']).__name__}")
            raise ValueError(f"{where} has {found}; a corpus line needs a string 'contents' field (title, "
                             "newline, text)")
        doc_id = row.get("id", number - 1)
        if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
            raise ValueError(f"{where}: 'id' is a {type(doc_id).__name__}; give a string or an integer")
        title, _, text = clean(row["contents"], "corpus", where).partition("\n")
        passages.append(Passage(clean(str(doc_id), "corpus", where), title.strip().strip('"'), text.strip()))
    return passages


def format_information(passages: list[Passage]) -> str:
    """Search-R1's observation of one search: ``<information>Doc i(Title: t) text`` lines ``</information>``."""
    docs = "".join(f"Doc {i + 1}(Title: {p.title}) {p.text}\n" for i, p in enumerate(passages))
    return f"\n<information>{docs or 'No results.'}</information>\n"


_DOC = re.compile(r"Doc \d+\(Title: (?P<title>[^)\n]*)\) (?P<text>[^\n]*)")


def read_information(observation: str) -> list[tuple[str, str]]:
    """``(title, text)`` of each document shown in an ``<information>`` block."""
    return [(m.group("title"), m.group("text")) for m in _DOC.finditer(observation)]
