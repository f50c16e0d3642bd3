"""WebShop's purchase reward (``web_agent_site/engine/goal.py``), re-implemented from its documented behaviour.

``R = r_type * (attribute matches + option matches + r_price) / (len(goal attributes) + len(goal options) + 1)``;
an episode is won when ``R == 1.0``. Fuzzy matching is ``rapidfuzz.fuzz.token_set_ratio`` with thefuzz's default
preprocessing (lower-case, non-alphanumerics to spaces), which is what WebShop's ``thefuzz`` calls do. ``r_type`` uses
the products' stored type nouns instead of spaCy POS tags.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from rapidfuzz import fuzz, utils

from craft_pl.envs.webshop.vocab import NORMALIZED_COLORS

PRICE_RANGE: tuple[float, ...] = tuple(float(v) for v in range(10, 1000, 10))
"""Candidate price ceilings of synthetic goals (10, 20, ..., 990)."""
NO_PRICE_LIMIT = 1e6
"""``price_upper`` of a goal whose product is too expensive for ``PRICE_RANGE`` (no price text in the goal)."""
FUZZ_THRESHOLD = 85
_COLOR_PATTERNS = tuple((c, re.compile(rf"(?<![a-z0-9]){re.escape(c)}(?![a-z0-9])")) for c in NORMALIZED_COLORS)


def normalize_color(text: str) -> str:
    """The first colour of the fixed list occurring in ``text`` (as whole words), else ``text`` unchanged."""
    low = text.lower()
    for colour, pattern in _COLOR_PATTERNS:
        if pattern.search(low):
            return colour
    return text


def fuzzy(a: str, b: str) -> float:
    """``token_set_ratio`` with thefuzz's default preprocessing."""
    return fuzz.token_set_ratio(a, b, processor=utils.default_process)


def _category_parts(category: str) -> set[str]:
    return {part.strip().lower() for part in category.split("›") if part.strip()}


def title_score(product_nouns: Iterable[str], goal_nouns: Iterable[str]) -> float:
    """Share of the goal's name nouns that the product's name also has (0.2 when the goal has none)."""
    goal = {n.lower() for n in goal_nouns}
    if not goal:
        return 0.2
    return len(goal & {n.lower() for n in product_nouns}) / len(goal)


def type_reward(product: Any, goal: Any) -> float:
    """``r_type``: 1.0, lowered to 0.5 without any query/category/title match, 0.1 below 0.1 title score, 0 at 0."""
    query_match = product.query == goal.query
    category_match = len(_category_parts(product.product_category) & _category_parts(goal.product_category)) >= 2
    score = title_score(product.name_nouns, goal.name_nouns)
    r_type = 1.0
    if not (query_match or category_match or score > 0.2):
        r_type = 0.5
    if score < 0.1:
        r_type = 0.1
    if score == 0:
        r_type = 0.0
    return r_type


def attribute_matches(product: Any, goal_attributes: Iterable[str]) -> int:
    """Goal attributes the product has: fuzzy match to one of its attributes, or a substring of its texts."""
    title = product.title.lower()
    bullets = " ".join(product.bullet_points).lower()
    description = product.description.lower()
    count = 0
    for wanted in goal_attributes:
        if any(fuzzy(have, wanted) > FUZZ_THRESHOLD for have in product.attributes):
            count += 1
        elif wanted in title or wanted in bullets or wanted in description:
            count += 1
    return count


def option_matches(chosen_options: Iterable[str], goal_options: Iterable[str]) -> int:
    """Goal option values matched (once each) by a chosen option value, after colour normalisation."""
    chosen = [normalize_color(o) for o in chosen_options]
    count = 0
    for wanted in (normalize_color(o) for o in goal_options):
        if any(fuzzy(have, wanted) > FUZZ_THRESHOLD for have in chosen):
            count += 1
    return count


@dataclass(frozen=True)
class Reward:
    """The parts of one purchase's reward."""

    r_type: float
    attribute_matches: int
    option_matches: int
    r_price: bool
    total: float

    @property
    def won(self) -> bool:
        return self.total == 1.0


def get_reward(product: Any, goal: Any, price: float, options: Mapping[str, str]) -> Reward:
    """Reward of buying ``product`` at ``price`` with the chosen ``options`` (``{name: value}``) for ``goal``.

    ``goal`` needs ``query``, ``product_category``, ``name_nouns``, ``attributes``, ``goal_options`` (``((name,
    value), ...)``) and ``price_upper``; ``product`` needs the same type fields plus ``attributes``, ``title``,
    ``bullet_points`` and ``description``.
    """
    r_type = type_reward(product, goal)
    goal_values = [value for _, value in goal.goal_options]
    n_attr = attribute_matches(product, goal.attributes)
    n_opt = option_matches(list(options.values()), goal_values)
    r_price = price <= goal.price_upper
    total = r_type * (n_attr + n_opt + int(r_price)) / (len(goal.attributes) + len(goal_values) + 1)
    return Reward(r_type, n_attr, n_opt, bool(r_price), float(total))


def price_upper(price: float, rng: Any) -> float:
    """A goal's price ceiling: the larger of 2 draws among the first 4 ``PRICE_RANGE`` values above ``price``."""
    above = [v for v in PRICE_RANGE if v > price][:4]
    if len(above) < 2:
        return NO_PRICE_LIMIT
    return max(rng.sample(above, 2))
