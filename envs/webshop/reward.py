"""WebShop's purchase reward, re-implemented rule for rule from ``web_agent_site/engine/goal.py`` and ``normalize.py``.

``R = r_type * (attribute matches + option matches + r_price) / (len(goal attributes) + len(goal options) + 1)``
(computed in that order: the fraction first, then ``*= r_type``); an episode is won when ``R == 1.0``.

Rules matched (WebShop file and function each comes from):

- Fuzzy scores (``goal.py`` calls ``thefuzz.fuzz.token_set_ratio``): thefuzz >= 0.20 deletes the characters
  U+0080..U+00FF (``utils.full_process(force_ascii=True)``), then applies rapidfuzz's ``default_process``
  (non-alphanumerics to spaces, lower-case, strip), calls ``rapidfuzz.fuzz.token_set_ratio`` and returns
  ``int(round(score))``. Python's ``round`` rounds half to even, so ``85.1 -> 85`` and ``85.5 -> 86``:
  ``score > 85`` passes exactly when the unrounded score is at least 85.5. ``fuzzy`` does the same.
- Attribute matches (``goal.py:get_attribute_reward``): a goal attribute counts once if
  ``token_set_ratio(product attribute, goal attribute) > 85`` for some product attribute, else if it is a substring
  of the lower-cased title, the space-joined lower-cased bullet points or the lower-cased description.
- Option matches, WebShop's master (``goal.py:get_option_reward`` at 64fa2a5c, the rule verl-agent vendors; the
  default, ``option_rule="master"``): the loop runs over the *goal's* options and counts each at most once, when some
  purchased value (colour-normalised) has ``token_set_ratio > 85`` with it. ``get_reward`` passes the goal options
  of a synthetic goal as dict items, i.e. ``(name, value)`` pairs: ``normalize_color`` of a pair is the first colour
  *equal* to its name or value, else the pair unchanged, and the fuzzy score of a pair reads its ``str`` (so a
  purchased value matches when its tokens lie among the name's and the value's). No size rule, no look-up in the
  product's text; the count never exceeds the number of goal options.
- Option matches, WebShop's unmerged ``v2`` branch (commit 6ba9969, ``option_rule="v2"``; the rule of every WebShop
  number this project recorded before 2026-12-07, kept to reproduce them): the loop runs over the *purchased*
  options, not the goal's. Both
  sides are colour-normalised first. A purchased option named ``size`` (case-insensitive; WebShop's
  ``EXACT_MATCH_OPTS``) matches when its value equals a goal option value; any other option matches when
  ``token_set_ratio(goal value, purchased value) > 85`` for some goal value. An unmatched purchased value still counts
  when it is a substring of the lower-cased title, bullet points or description. So the count can exceed the number
  of goal options, and ``R`` can exceed 1 (then the purchase is not a win), exactly as in WebShop; with
  ``options_per_goal`` below the product's option count this can happen here when the agent also picks an option
  the goal did not ask for and its value occurs in the product text.
- Colour normalisation (``normalize.py:normalize_color``): the first entry of WebShop's alphabetical ``COLOR_SET``
  that is a plain, case-sensitive substring of the value, else the value unchanged. There is no compound-colour
  preference and no word boundary (``"navy blue" -> "blue"``, ``"rose gold" -> "gold"``, ``"standard" -> "tan"``).
- Type reward (``goal.py:get_type_reward``): ``query_match`` is ``==`` on the queries; ``category_match`` splits both
  ``product_category`` strings on ``›``, strips each part (no lower-casing, empty parts kept) and needs at least 2
  shared parts; ``title_score`` is (unique shared lower-cased nouns) / (number of goal nouns *with repeats*), 0.2
  for a goal without nouns; then ``r_type`` is 1.0, 0.5 when none of the three matches (``title_score > 0.2``),
  0.1 when ``title_score < 0.1``, 0.0 when ``title_score == 0``.
- Price (``goal.py:get_reward``): ``r_price = price <= price_upper``, added as 0/1.

Departures (each with its reason):

- The nouns of ``title_score`` are the product type's stored nouns (``ProductType.nouns``, e.g. ``("yoga",
  "pants")``), not the NOUN/PROPN/PNOUN tokens that spaCy's ``en_core_web_lg`` tags in the product's and the goal's
  names (titles). The spaCy model downloads from GitHub, which is unreachable offline, and tagging every purchase
  would be slow; in synthetic titles the brand and attribute words would also count as nouns. The counting around the
  nouns (lower-casing, set intersection, denominator with repeats) is WebShop's.
- WebShop sets ``r_price`` to ``None`` when ``price_upper <= 0`` (and then fails adding it); here ``price_upper`` is
  always positive (a ``PRICE_RANGE`` value or ``NO_PRICE_LIMIT``), so ``r_price`` is always a bool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

from rapidfuzz import fuzz, utils

PRICE_RANGE: tuple[float, ...] = tuple(float(v) for v in range(10, 1000, 10))
"""Candidate price ceilings of synthetic goals (10, 20, ..., 990)."""
NO_PRICE_LIMIT = 1e6
"""``price_upper`` of a goal whose product is too expensive for ``PRICE_RANGE`` (no price text in the goal)."""
FUZZ_THRESHOLD = 85
"""A fuzzy match needs the integer ``token_set_ratio`` to be strictly above this."""
OptionRule = Literal["master", "v2"]
OPTION_RULES: tuple[str, ...] = ("master", "v2")
EXACT_MATCH_OPTIONS: tuple[str, ...] = ("size",)
"""Purchased options with these (lower-cased) names match goal options by equality, not fuzzily."""
WEBSHOP_COLORS: tuple[str, ...] = tuple(
    """
    alabaster apricot aqua ash asphalt azure banana beige black blue blush bordeaux bronze brown burgundy camel camo
    caramel champagne charcoal cheetah chestnut chocolate christmas coffee cognac copper coral cranberry cream crystal
    dark denim eggplant elephant espresso fuchsia gold granite grape graphite grass gray green grey heather indigo
    ivory ivy khaki lavender lemon leopard light lilac lime magenta maroon mauve merlot midnight mint mocha multicolor
    mushroom mustard natural navy nude olive orange peach pewter pink plum purple rainbow red rose royal rust sand
    sapphire seashell silver skull slate steel stone stonewash sunflower tan taupe teal tiger turquoise violet walnut
    wheat white wine yellow
    """.split()
)
"""WebShop's ``COLOR_SET`` (``normalize.py``) in its (alphabetical) order: ``normalize_color`` takes the first hit."""

_DROP_LATIN1 = {code: None for code in range(128, 256)}


def thefuzz_round(score: float) -> int:
    """thefuzz's conversion of a rapidfuzz score: ``int(round(score))`` (Python rounds halves to even)."""
    return int(round(score))


def full_process(text: str) -> str:
    """thefuzz's ``full_process(text, force_ascii=True)``: drop U+0080..U+00FF, then rapidfuzz's ``default_process``."""
    return utils.default_process(str(text).translate(_DROP_LATIN1))


def fuzzy(a: str, b: str) -> int:
    """``thefuzz.fuzz.token_set_ratio(a, b)``: an integer in 0..100."""
    if a is None or b is None:
        return 0
    return thefuzz_round(fuzz.token_set_ratio(full_process(a), full_process(b)))


def normalize_color(text: str) -> str:
    """WebShop's ``normalize_color``: the first ``WEBSHOP_COLORS`` entry that is a substring of ``text``, else it."""
    for colour in WEBSHOP_COLORS:
        if colour in text:
            return colour
    return text


def category_parts(category: str) -> set[str]:
    """The parts of a ``"a › b › c"`` category, stripped (not lower-cased; an empty part is kept, as in WebShop)."""
    return {part.strip() for part in category.split("›")}


def title_score(product_nouns: Iterable[str], goal_nouns: Iterable[str]) -> float:
    """Unique shared (lower-cased) nouns over the goal's noun count, repeats included (0.2 when the goal has none)."""
    desired = [noun.lower() for noun in goal_nouns]
    if not desired:
        return 0.2
    return len({noun.lower() for noun in product_nouns} & set(desired)) / len(desired)


def type_reward(product: Any, goal: Any) -> float:
    """``r_type``: 1.0, lowered to 0.5 without any query/category/title match, 0.1 below 0.1 title score, 0 at 0."""
    query_match = product.query == goal.query
    category_match = len(category_parts(product.product_category) & category_parts(goal.product_category)) >= 2
    score = title_score(product.name_nouns, goal.name_nouns)
    r_type = 1.0
    if not (query_match or category_match or score > 0.2):
        r_type = 0.5
    if score < 0.1:
        r_type = 0.1
    if score == 0.0:
        r_type = 0.0
    return r_type


def _product_texts(product: Any) -> tuple[str, str, str]:
    """Lower-cased title, space-joined bullet points and description (where a missed value may still be found)."""
    return product.title.lower(), " ".join(product.bullet_points).lower(), product.description.lower()


def attribute_matches(product: Any, goal_attributes: Iterable[str]) -> int:
    """Goal attributes the product has: fuzzy match to one of its attributes, or a substring of its texts."""
    texts = _product_texts(product)
    count = 0
    for wanted in goal_attributes:
        if any(fuzzy(have, wanted) > FUZZ_THRESHOLD for have in product.attributes):
            count += 1
        elif any(wanted in text for text in texts):
            count += 1
    return count


def _named_values(options: Mapping[str, str] | Iterable[Any]) -> list[tuple[str, str]]:
    """``(name, value)`` pairs from a ``{name: value}`` mapping, ``(name, value)`` pairs or bare values (name "")."""
    if isinstance(options, Mapping):
        return [(str(name), value) for name, value in options.items()]
    return [("", item) if isinstance(item, str) else (str(item[0]), item[1]) for item in options]


def normalize_goal_option(option: Any) -> Any:
    """WebShop master's ``normalize_color`` of a goal option: a ``(name, value)`` pair becomes the first colour equal
    to its name or its value (membership in a tuple is equality), else stays the pair; a bare value as for
    purchased values."""
    if isinstance(option, tuple):
        for colour in WEBSHOP_COLORS:
            if colour in option:
                return colour
        return option
    return normalize_color(option)


def goal_option_matches(chosen_values: Iterable[str], goal_options: Iterable[Any]) -> int:
    """Goal options that some purchased value matches (WebShop master's ``get_option_reward``; module docstring).

    ``chosen_values``: the purchased option values. ``goal_options``: ``(name, value)`` pairs (a synthetic goal's
    dict items, as master passes them) or bare values. Each goal option counts at most once.
    """
    purchased = [normalize_color(value) for value in chosen_values]
    count = 0
    for option in goal_options:
        wanted = normalize_goal_option(tuple(option) if isinstance(option, (list, tuple)) else option)
        if any(fuzzy(value, wanted) > FUZZ_THRESHOLD for value in purchased):
            count += 1
    return count


def option_matches(chosen_options: Mapping[str, str] | Iterable[Any], goal_options: Iterable[Any],
                   product: Any = None) -> int:
    """Purchased options that match (the ``v2`` branch's ``get_option_reward``; see the module docstring).

    ``chosen_options``: ``{name: value}``, ``(name, value)`` pairs, or bare values (matched fuzzily, as WebShop does
    for every option not named ``size``). ``goal_options``: values, or ``(name, value)`` pairs (names ignored, as
    WebShop passes only the values). ``product``: where an unmatched purchased value is looked up in the title,
    bullet points and description; ``None`` skips that look-up.
    """
    wanted = [normalize_color(value) for _, value in _named_values(goal_options)]
    texts = _product_texts(product) if product is not None else ()
    count = 0
    for name, value in _named_values(chosen_options):
        value = normalize_color(value)
        if name.lower() in EXACT_MATCH_OPTIONS:
            matched = value in wanted
        else:
            matched = any(fuzzy(goal_value, value) > FUZZ_THRESHOLD for goal_value in wanted)
        if not matched and any(value in text for text in texts):
            matched = True
        count += matched
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


def get_reward(product: Any, goal: Any, price: float, options: Mapping[str, str],
               option_rule: OptionRule = "master") -> Reward:
    """Reward of buying ``product`` at ``price`` with the chosen ``options`` (``{name: value}``) for ``goal``.

    ``goal`` needs ``query``, ``product_category``, ``name_nouns``, ``attributes``, ``goal_options`` (``((name,
    value), ...)``) and ``price_upper``; ``product`` needs the same type fields plus ``attributes``, ``title``,
    ``bullet_points`` and ``description``. ``option_rule``: WebShop master's option count or the ``v2`` branch's.
    """
    if option_rule not in OPTION_RULES:
        raise ValueError(f"option_rule must be one of {OPTION_RULES}, got {option_rule!r}")
    r_type = type_reward(product, goal)
    goal_values = [value for _, value in _named_values(goal.goal_options)]
    n_attr = attribute_matches(product, goal.attributes)
    if option_rule == "master":
        pairs = [pair if pair[0] else pair[1] for pair in _named_values(goal.goal_options)]  # bare values stay bare
        n_opt = goal_option_matches(dict(options).values(), pairs)
    else:
        n_opt = option_matches(options, goal_values, product)
    r_price = bool(price <= goal.price_upper)
    total = (n_attr + n_opt + int(r_price)) / (len(goal.attributes) + len(goal_values) + 1)
    total *= r_type
    return Reward(r_type, n_attr, n_opt, r_price, float(total))


def price_upper(price: float, rng: Any) -> float:
    """A goal's price ceiling: the larger of 2 draws among the first 4 ``PRICE_RANGE`` values above ``price``."""
    above = [v for v in PRICE_RANGE if v > price][:4]
    if len(above) < 2:
        return NO_PRICE_LIMIT
    return max(rng.sample(above, 2))
