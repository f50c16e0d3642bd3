"""Page graph of WebShop's text mode: page state, rendering to ``[SEP]``-joined text, clickables and transitions.

Also ``parse_page``: recovers the page kind and clickables from an observation string alone, for the prompt's action
list and for the expert (which may only read what the agent reads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from craft_pl.envs.webshop.catalog import Catalog
from craft_pl.envs.webshop.search import SearchIndex
from craft_pl.envs.webshop.vocab import OPTION_NAMES, SEP

BACK, NEXT, PREV = "Back to Search", "Next >", "< Prev"
SUB_PAGES = ("Description", "Features", "Reviews")
BUY = "Buy Now"
ITEM_TAIL = 7
"""Parts after the options on an item page: title, price, rating, the three sub-page buttons, Buy Now."""
_OPTION_NAMES = frozenset(name for pair in OPTION_NAMES.values() for name in pair)


@dataclass(frozen=True)
class PageState:
    """Where the agent is. Immutable, so an invalid action provably leaves it unchanged."""

    kind: str = "search"
    """``search``, ``results``, ``item`` or a sub-page (``description``, ``features``, ``reviews``)."""
    query: str = ""
    results: tuple[int, ...] = ()
    page: int = 1
    item: int = -1
    selected: tuple[tuple[str, str], ...] = ()
    """Chosen options of the open item, ``((name, value), ...)``."""


@dataclass
class Browser:
    """Renders pages and applies clicks/searches for one catalogue and instruction."""

    catalog: Catalog
    search_index: SearchIndex
    instruction: str
    results_per_page: int = 10
    search_return_n: int = 50
    id_style: str = "short"
    """``rank``: results are named by their place on the page (1, 2, ...); otherwise by their ASIN."""

    def last_page(self, state: PageState) -> int:
        return max(1, math.ceil(len(state.results) / self.results_per_page))

    def render(self, state: PageState) -> tuple[str, list[str]]:
        """``(observation, clickables)``; clickables are lower-cased as WebShop's ``text_to_clickable`` keys."""
        if state.kind == "search":
            return SEP.join(("WebShop", "Instruction:", self.instruction, "Search")), []
        if state.kind == "results":
            parts = [BACK, f"Page {state.page} (Total results: {len(state.results)})"]
            if state.page > 1:
                parts.append(PREV)
            if state.page < self.last_page(state):
                parts.append(NEXT)
            buttons = list(parts[2:])
            start = (state.page - 1) * self.results_per_page
            ids = []
            for place, index in enumerate(state.results[start : start + self.results_per_page], start=1):
                product = self.catalog.products[index]
                name = str(place) if self.id_style == "rank" else product.asin
                parts += [name, product.title, product.pricing]
                ids.append(name.lower())
            return SEP.join(parts), [BACK.lower()] + [b.lower() for b in buttons] + ids
        product = self.catalog.products[state.item]
        if state.kind == "item":
            parts, values = [BACK, PREV], []
            for name, options in product.options:
                parts.append(name)
                parts.extend(options)
                values.extend(options)
            parts += [product.title, f"Price: {product.pricing}", "Rating: N.A.", *SUB_PAGES, BUY]
            clickables = [BACK.lower(), PREV.lower(), *values, *(s.lower() for s in SUB_PAGES), BUY.lower()]
            return SEP.join(parts), clickables
        body = {
            "description": (product.description,),
            "features": product.bullet_points,
            "reviews": (product.reviews,),
        }[state.kind]
        return SEP.join((BACK, PREV, *body)), [BACK.lower(), PREV.lower()]

    def clickables(self, state: PageState) -> list[str]:
        return self.render(state)[1]

    def search(self, state: PageState, query: str) -> PageState | None:
        """The results page of ``query`` (page 1), or ``None`` where there is no search bar or no query."""
        query = query.strip().lower()
        if state.kind != "search" or not query:
            return None
        return PageState(kind="results", query=query, results=self.search_index.search(query, self.search_return_n))

    def click(self, state: PageState, target: str) -> tuple[PageState | None, bool]:
        """``(new state, bought)``; ``(None, False)`` when ``target`` is not clickable here."""
        target = target.strip().lower()
        if target not in self.clickables(state):
            return None, False
        if target == BACK.lower():
            return PageState(), False
        if state.kind == "results":
            if target == NEXT.lower():
                return replace(state, page=state.page + 1), False
            if target == PREV.lower():
                return replace(state, page=state.page - 1), False
            if self.id_style == "rank":
                index = state.results[(state.page - 1) * self.results_per_page + int(target) - 1]
            else:
                index = self.catalog.by_asin[target]
            return replace(state, kind="item", item=index, selected=()), False
        if state.kind == "item":
            if target == PREV.lower():
                return replace(state, kind="results", item=-1, selected=()), False
            if target == BUY.lower():
                return state, True
            if target in ("description", "features", "reviews"):
                return replace(state, kind=target), False
            product = self.catalog.products[state.item]
            for name, values in product.options:
                if target in values:
                    chosen = dict(state.selected)
                    chosen[name] = target
                    ordered = tuple((n, chosen[n]) for n, _ in product.options if n in chosen)
                    return replace(state, selected=ordered), False
            return None, False
        # sub-pages: only "< prev" is left
        return replace(state, kind="item"), False


@dataclass(frozen=True)
class ParsedPage:
    """What an observation string shows, recovered from the text alone."""

    kind: str
    """``search``, ``results``, ``item``, ``sub`` or ``unknown``."""
    clickables: tuple[str, ...] = ()
    results: tuple[tuple[str, str, str], ...] = ()
    """Results page: ``(id, title, price text)`` in display order."""
    page: int = 0
    options: tuple[tuple[str, tuple[str, ...]], ...] = ()
    title: str = ""
    price: str = ""

    @property
    def has_search_bar(self) -> bool:
        return self.kind == "search"


def parse_page(observation: str) -> ParsedPage:
    """Recover page kind, clickables and content from a rendered observation (never raises)."""
    parts = observation.split(SEP) if isinstance(observation, str) else []
    if len(parts) >= 4 and parts[0] == "WebShop" and parts[1] == "Instruction:":
        return ParsedPage(kind="search")
    if len(parts) >= 2 and parts[0] == BACK and parts[1].startswith("Page "):
        header = [BACK]
        rest = parts[2:]
        while rest and rest[0] in (PREV, NEXT):
            header.append(rest.pop(0))
        results = tuple(tuple(rest[i : i + 3]) for i in range(0, len(rest) - 2, 3))
        try:
            page = int(parts[1].split()[1])
        except (IndexError, ValueError):
            page = 0
        clickables = tuple(h.lower() for h in header) + tuple(r[0].lower() for r in results)
        return ParsedPage(kind="results", clickables=clickables, results=results, page=page)
    if len(parts) >= 2 + ITEM_TAIL and parts[:2] == [BACK, PREV] and parts[-1] == BUY:
        options: list[tuple[str, list[str]]] = []
        for text in parts[2:-ITEM_TAIL]:
            if text in _OPTION_NAMES or not options:
                options.append((text, []))
            else:
                options[-1][1].append(text)
        values = tuple(v for _, vs in options for v in vs)
        clickables = (BACK.lower(), PREV.lower(), *values, *(s.lower() for s in SUB_PAGES), BUY.lower())
        return ParsedPage(
            kind="item",
            clickables=clickables,
            options=tuple((n, tuple(vs)) for n, vs in options),
            title=parts[-ITEM_TAIL],
            price=parts[-ITEM_TAIL + 1].removeprefix("Price: "),
        )
    if len(parts) >= 2 and parts[:2] == [BACK, PREV]:
        return ParsedPage(kind="sub", clickables=(BACK.lower(), PREV.lower()))
    return ParsedPage(kind="unknown")


def admissible(page: ParsedPage | list[str], has_search_bar: bool = False) -> list[str]:
    """verl-agent's action list: ``search[<your query>]`` with a search bar, then ``click[x]`` per clickable."""
    if isinstance(page, ParsedPage):
        has_search_bar, clickables = page.has_search_bar, list(page.clickables)
    else:
        clickables = page
    return (["search[<your query>]"] if has_search_bar else []) + [f"click[{c}]" for c in clickables]
