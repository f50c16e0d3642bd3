"""BM25 search over WebShop's ``contents`` field (bm25s, Lucene's English stopword list, no stemming)."""

from __future__ import annotations

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from craft_pl.envs.webshop.catalog import Catalog, words

_STOP = frozenset(STOPWORDS_EN)
_CACHE_LIMIT = 100_000
_MAX_RANK = 1000


def tokenize(text: str) -> list[str]:
    """Search tokens of a text: lower-cased words without stopwords."""
    return [w for w in words(text) if w not in _STOP]


class SearchIndex:
    """Ranks products for a query; results are a tuple of product indices, best first, only positive scores.

    Ties are broken by product index, so a query always returns the same list. Rankings (the first 1000) are
    cached per token sequence, and one index is shared by every environment built on the same catalogue.
    """

    def __init__(self, catalog: Catalog) -> None:
        self._retriever = bm25s.BM25()
        self._retriever.index([tokenize(p.contents) for p in catalog.products], show_progress=False)
        self._cache: dict[tuple[str, ...], tuple[int, ...]] = {}

    def search(self, query: str, return_n: int = 50) -> tuple[int, ...]:
        """Indices of the top ``return_n`` products for ``query`` (empty when no word of it is indexed)."""
        tokens = tuple(tokenize(query))
        hit = self._cache.get(tokens)
        if hit is not None:
            return hit[:return_n]
        if not tokens:
            result: tuple[int, ...] = ()
        else:
            scores = np.asarray(self._retriever.get_scores(list(tokens)), dtype=np.float64)
            positive = np.flatnonzero(scores > 0)
            order = positive[np.lexsort((positive, -scores[positive]))]
            result = tuple(int(i) for i in order[:_MAX_RANK])
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[tokens] = result
        return result[:return_n]
