"""Seeded product catalogue: WebShop-like products (Title, BulletPoints, Description, options, price, ASIN).

Products come in *families*: a base product and ``near_duplicates`` look-alikes of the same type with the same title
attributes but another brand, price and option values. Look-alikes rank next to each other in search, so picking the
right one needs reading prices (and, after clicking, options): they are the distractors of the results page.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

from craft_pl.envs.webshop.vocab import (
    ATTRIBUTES,
    BRAND_SYLLABLES,
    COLORS,
    NORMALIZED_COLORS,
    OPTION_NAMES,
    SIZES,
    ProductType,
    interleaved_types,
)

ID_STYLES = ("rank", "short", "asin")
"""How results pages name products: ``rank``: by their place on the page (``1`` .. ``results_per_page``; products
keep ``short`` ids inside); ``short``: ``B`` + digit + 2 of [A-Z0-9] (e.g. ``B7QX``); ``asin``: ``B0`` + 8 of
[A-Z0-9] as in WebShop."""
MAX_SHORT_IDS = 6000
"""Largest catalogue the ``short`` id style supports (10 x 36 x 36 ids, kept well below for quick sampling)."""
TITLE_ATTRIBUTES = 3
"""At most this many of a product's attributes appear in its title (the rest only in bullets/description)."""
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


@dataclass(frozen=True)
class Product:
    """One catalogue item, with WebShop's fields."""

    index: int
    asin: str
    title: str
    brand: str
    query: str
    """The product type noun phrase (WebShop's ``query``)."""
    name_nouns: tuple[str, ...]
    """Nouns of the name, for ``r_type``'s title score."""
    product_category: str
    category: str
    task_type: str
    attributes: tuple[str, ...]
    title_attributes: tuple[str, ...]
    options: tuple[tuple[str, tuple[str, ...]], ...]
    """``((name, values), ...)`` in display order (colour-like first, then size-like)."""
    price: float
    """The price paid on purchase (sampled once inside a displayed range)."""
    pricing: str
    """The price as displayed: ``"$12.34"`` or ``"$10.00 to $25.50"``."""
    price_high: float
    """Upper end of the displayed price."""
    bullet_points: tuple[str, ...]
    description: str
    reviews: str
    contents: str = field(repr=False)
    """Search text: lower(Title + Description + BulletPoints[0] + options text), as WebShop indexes it."""

    @property
    def option_dict(self) -> dict[str, tuple[str, ...]]:
        return dict(self.options)


@dataclass
class Catalog:
    """All products of one ``(num_products, seed, ...)`` configuration."""

    products: list[Product]
    types: list[ProductType]
    by_asin: dict[str, int]
    """Lower-cased ASIN to product index."""
    by_query: dict[str, list[int]]
    """Product type to the indices of its products."""

    def __len__(self) -> int:
        return len(self.products)


def _brands(rng: random.Random, count: int) -> list[str]:
    banned = set(NORMALIZED_COLORS) | {a for pool in ATTRIBUTES.values() for a in pool}
    banned |= {s for pool in SIZES.values() for s in pool}
    brands: list[str] = []
    seen: set[str] = set()
    while len(brands) < count:
        word = rng.choice(BRAND_SYLLABLES) + rng.choice(BRAND_SYLLABLES)
        if word in seen or any(b in word for b in banned if len(b) >= 3):
            continue
        seen.add(word)
        brands.append(word.capitalize())
    return brands


def _ids(rng: random.Random, count: int, style: str) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        if style == "asin":  # "rank" and "short" catalogues both carry short ids
            new = "B0" + "".join(rng.choice(_ALNUM) for _ in range(8))
        else:
            new = "B" + rng.choice("0123456789") + rng.choice(_ALNUM) + rng.choice(_ALNUM)
        if new not in seen:
            seen.add(new)
            ids.append(new)
    return ids


def _price(rng: random.Random, band: tuple[float, float]) -> float:
    lo, hi = band
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))), 2)


def _options_text(options: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    return ", and ".join(f"{name}: {', '.join(values)}" for name, values in options)


def build_catalog(
    num_products: int,
    seed: int,
    num_product_types: int,
    near_duplicates: int,
    id_style: str,
    price_range_prob: float,
) -> Catalog:
    """Generate the catalogue deterministically from the arguments (own ``random.Random``; never the global RNG)."""
    rng = random.Random(f"webshop-catalog:{seed}")
    types = interleaved_types(num_product_types)
    brands = _brands(rng, 40)
    ids = _ids(rng, num_products, id_style)
    products: list[Product] = []
    family: dict = {}
    for index in range(num_products):
        if index % (near_duplicates + 1) == 0:  # a new family: type and title attributes
            ptype = types[rng.randrange(len(types))]
            pool = ATTRIBUTES[ptype.bucket]
            n_title = min(TITLE_ATTRIBUTES, rng.randint(2, 6))
            family = {"type": ptype, "title_attrs": tuple(rng.sample(pool, n_title))}
        ptype, title_attrs = family["type"], family["title_attrs"]
        bucket = ptype.bucket
        rest = [a for a in ATTRIBUTES[bucket] if a not in title_attrs]
        extra = tuple(rng.sample(rest, rng.randint(max(0, 2 - len(title_attrs)), 6 - len(title_attrs))))
        attributes = title_attrs + extra
        colour_pool = COLORS[bucket]
        colours = tuple(rng.sample(colour_pool, rng.randint(2, min(5, len(colour_pool)))))
        size_pool = SIZES[bucket]
        picked = set(rng.sample(size_pool, rng.randint(2, len(size_pool))))
        sizes = tuple(s for s in size_pool if s in picked)
        names = OPTION_NAMES[bucket]
        options = ((names[0], colours), (names[1], sizes))
        brand = rng.choice(brands)
        low = _price(rng, ptype.price)
        if rng.random() < price_range_prob:
            high = round(low * rng.uniform(1.2, 2.0), 2)
            price = round(rng.uniform(low, high), 2)
            pricing = f"${low:.2f} to ${high:.2f}"
        else:
            high = price = low
            pricing = f"${low:.2f}"
        title = f"{brand} {' '.join(title_attrs)} {ptype.name}"
        bullets = tuple(attributes) + (f"{ptype.name} by {brand}",)
        description = f"{brand} {ptype.name}: {', '.join(attributes)}."
        contents = " ".join((title, description, bullets[0], _options_text(options))).lower()
        products.append(
            Product(
                index=index,
                asin=ids[index],
                title=title,
                brand=brand,
                query=ptype.name,
                name_nouns=ptype.nouns,
                product_category=ptype.category,
                category=ptype.category.split(" › ")[0],
                task_type=bucket,
                attributes=attributes,
                title_attributes=title_attrs,
                options=options,
                price=price,
                pricing=pricing,
                price_high=high,
                bullet_points=bullets,
                description=description,
                reviews="No reviews yet.",
                contents=contents,
            )
        )
    by_query: dict[str, list[int]] = {}
    for product in products:
        by_query.setdefault(product.query, []).append(product.index)
    return Catalog(products, types, {p.asin.lower(): p.index for p in products}, by_query)


_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (hyphenated words kept whole), shared by search and the expert's title checks."""
    return _WORD.findall(text.lower())
