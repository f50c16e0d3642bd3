"""Fixed vocabulary of the synthetic WebShop: task buckets, product types, attribute pools, option values, colours.

Everything here is hand-written data. Attribute phrases inside one bucket share no word, so that a goal attribute
never fuzzily matches another attribute of the same bucket (``tests/test_webshop.py`` checks this), and option values
of one option never contain each other (so a wrong size or colour does not earn option credit by accident).
"""

from __future__ import annotations

from dataclasses import dataclass

TASK_TYPES: tuple[str, ...] = (
    "apparel",
    "electronics",
    "footwear",
    "beauty_health",
    "home_decor",
    "accessories",
    "other",
)
"""The task-type buckets (SDAR's WebShop skill buckets), in the order types are interleaved."""

SEP = " [SEP] "
"""Separator between the visible text nodes of a page, as in WebShop's text mode."""

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "apparel": ("machine wash", "long sleeve", "button down", "slim fit", "moisture wicking", "quick dry",
                "pure cotton", "elastic waist", "wrinkle free", "hooded", "lightweight", "breathable"),
    "footwear": ("non slip", "arch support", "rubber sole", "memory foam", "waterproof", "lace up", "wide width",
                 "cushioned", "ankle strap", "steel toe", "breathable mesh", "padded collar"),
    "electronics": ("wireless", "noise cancelling", "fast charging", "bluetooth", "usb c", "long battery life",
                    "high definition", "touch control", "water resistant", "plug and play", "dual band", "portable"),
    "beauty_health": ("paraben free", "cruelty free", "sulfate free", "travel size", "long lasting",
                      "natural ingredients", "sensitive skin", "dermatologist tested", "anti aging", "oil control",
                      "vegan", "hypoallergenic"),
    "home_decor": ("easy clean", "handmade", "rustic", "easy install", "living room", "eco friendly",
                   "space saving", "heavy duty", "farmhouse style", "ready to hang", "stain resistant", "modern"),
    "accessories": ("genuine leather", "rfid blocking", "adjustable strap", "stainless steel", "gift box",
                    "scratch resistant", "zipper pocket", "polarized", "minimalist", "large capacity", "unisex",
                    "lightweight"),
    "other": ("gluten free", "sugar free", "non gmo", "organic", "keto friendly", "kosher", "low calorie",
              "family size", "individually wrapped", "high protein", "plant based", "resealable bag"),
}
"""Per-bucket attribute pools (2-6 are drawn per product)."""

COLORS: dict[str, tuple[str, ...]] = {
    "apparel": ("black", "white", "navy", "grey", "red", "green", "beige", "burgundy", "olive", "pink"),
    "footwear": ("black", "white", "grey", "brown", "blue", "red", "tan", "pink", "khaki", "navy"),
    "electronics": ("black", "white", "silver", "blue", "red", "gold", "green", "purple", "pink", "grey"),
    "beauty_health": ("lavender", "rose", "citrus", "coconut", "vanilla", "unscented", "mint", "jasmine"),
    "home_decor": ("ivory", "grey", "blue", "green", "beige", "black", "white", "teal", "mustard", "brown"),
    "accessories": ("black", "brown", "tan", "navy", "grey", "red", "green", "silver", "gold", "burgundy"),
    "other": ("vanilla", "chocolate", "strawberry", "original", "caramel", "lemon", "cinnamon", "peanut butter"),
}
"""Values of each bucket's first option (a colour, scent or flavour)."""

SIZES: dict[str, tuple[str, ...]] = {
    "apparel": ("small", "medium", "large", "xl", "xxl"),
    "footwear": ("6", "7", "8", "9", "10", "11", "12"),
    "electronics": ("standard", "pro", "mini", "plus", "max"),
    "beauty_health": ("mini", "regular", "large", "jumbo"),
    "home_decor": ("small", "medium", "large", "oversized"),
    "accessories": ("small", "medium", "large"),
    "other": ("single", "double", "bulk", "sampler"),
}
"""Values of each bucket's second option."""

OPTION_NAMES: dict[str, tuple[str, str]] = {
    "apparel": ("color", "size"),
    "footwear": ("color", "size"),
    "electronics": ("color", "style"),
    "beauty_health": ("scent", "size"),
    "home_decor": ("color", "size"),
    "accessories": ("color", "size"),
    "other": ("flavor", "size"),
}
"""Names of each bucket's two options, as the item page and the instructions show them."""


@dataclass(frozen=True)
class ProductType:
    """A product type: the noun phrase a goal asks for, its category tree and its price band."""

    name: str
    """Type noun phrase, e.g. ``"running shoes"`` (WebShop's ``query``)."""
    nouns: tuple[str, ...]
    """The nouns of the phrase (stand-in for spaCy's NOUN/PROPN tokens in ``r_type``)."""
    bucket: str
    """Task-type bucket, one of ``TASK_TYPES``."""
    category: str
    """WebShop-like category tree, ``"a › b › c"``."""
    price: tuple[float, float]
    """Price band (low, high) in dollars."""


def _t(name: str, nouns: str, bucket: str, category: str, lo: float, hi: float) -> ProductType:
    return ProductType(name, tuple(nouns.split()), bucket, category, (lo, hi))


PRODUCT_TYPES: tuple[ProductType, ...] = (
    _t("t-shirt", "t-shirt", "apparel", "clothing › men › shirts › t-shirts", 8, 160),
    _t("hoodie", "hoodie", "apparel", "clothing › men › sweaters › hoodies", 20, 320),
    _t("yoga pants", "yoga pants", "apparel", "clothing › women › pants › leggings", 15, 240),
    _t("denim jacket", "denim jacket", "apparel", "clothing › women › coats › jackets", 30, 480),
    _t("maxi dress", "maxi dress", "apparel", "clothing › women › dresses › casual", 20, 360),
    _t("polo shirt", "polo shirt", "apparel", "clothing › men › shirts › polos", 12, 220),
    _t("earbuds", "earbuds", "electronics", "electronics › headphones › earbuds", 15, 600),
    _t("headphones", "headphones", "electronics", "electronics › headphones › over ear", 25, 1000),
    _t("phone charger", "phone charger", "electronics", "electronics › accessories › chargers", 8, 180),
    _t("speaker", "speaker", "electronics", "electronics › audio › speakers", 20, 800),
    _t("power bank", "power bank", "electronics", "electronics › accessories › batteries", 12, 280),
    _t("keyboard", "keyboard", "electronics", "electronics › computers › keyboards", 15, 520),
    _t("running shoes", "shoes", "footwear", "clothing › shoes › athletic › running", 30, 640),
    _t("hiking boots", "boots", "footwear", "clothing › shoes › outdoor › boots", 40, 800),
    _t("sandals", "sandals", "footwear", "clothing › shoes › summer › sandals", 12, 280),
    _t("slippers", "slippers", "footwear", "clothing › shoes › home › slippers", 10, 200),
    _t("loafers", "loafers", "footwear", "clothing › shoes › formal › loafers", 30, 560),
    _t("sneakers", "sneakers", "footwear", "clothing › shoes › casual › sneakers", 25, 480),
    _t("shampoo", "shampoo", "beauty_health", "beauty & personal care › hair care › shampoo", 5, 140),
    _t("face moisturizer", "face moisturizer", "beauty_health", "beauty & personal care › skin care › face",
       8, 240),
    _t("lipstick", "lipstick", "beauty_health", "beauty & personal care › makeup › lips", 5, 120),
    _t("sunscreen", "sunscreen", "beauty_health", "beauty & personal care › skin care › sun", 6, 160),
    _t("body lotion", "body lotion", "beauty_health", "beauty & personal care › skin care › body", 5, 140),
    _t("hair oil", "hair oil", "beauty_health", "beauty & personal care › hair care › treatments", 6, 160),
    _t("throw pillow", "throw pillow", "home_decor", "home & kitchen › decor › pillows", 10, 200),
    _t("wall clock", "wall clock", "home_decor", "home & kitchen › decor › clocks", 15, 360),
    _t("table lamp", "table lamp", "home_decor", "home & kitchen › lighting › lamps", 20, 480),
    _t("area rug", "area rug", "home_decor", "home & kitchen › rugs › area rugs", 30, 1000),
    _t("picture frame", "picture frame", "home_decor", "home & kitchen › decor › frames", 8, 180),
    _t("scented candle", "candle", "home_decor", "home & kitchen › decor › candles", 8, 160),
    _t("wallet", "wallet", "accessories", "clothing › accessories › wallets", 10, 320),
    _t("backpack", "backpack", "accessories", "clothing › accessories › bags › backpacks", 20, 480),
    _t("sunglasses", "sunglasses", "accessories", "clothing › accessories › eyewear", 10, 600),
    _t("belt", "belt", "accessories", "clothing › accessories › belts", 10, 240),
    _t("tote bag", "tote bag", "accessories", "clothing › accessories › bags › totes", 12, 360),
    _t("baseball cap", "baseball cap", "accessories", "clothing › accessories › hats", 8, 160),
    _t("snack bars", "snack bars", "other", "grocery › snacks › bars", 5, 160),
    _t("coffee beans", "coffee beans", "other", "grocery › beverages › coffee", 8, 180),
    _t("green tea", "tea", "other", "grocery › beverages › tea", 5, 120),
    _t("protein powder", "protein powder", "other", "health & household › nutrition › protein", 15, 320),
    _t("dog treats", "dog treats", "other", "pet supplies › dogs › treats", 5, 140),
    _t("olive oil", "olive oil", "other", "grocery › pantry › oils", 6, 160),
)
"""All product types (6 per bucket); ``num_product_types`` takes them bucket-interleaved."""


def interleaved_types(count: int) -> list[ProductType]:
    """The first ``count`` product types, one bucket after another (so every bucket appears once count >= 7)."""
    by_bucket = [[t for t in PRODUCT_TYPES if t.bucket == b] for b in TASK_TYPES]
    order = [group[i] for i in range(max(len(g) for g in by_bucket)) for group in by_bucket if i < len(group)]
    return order[:count]


BRAND_SYLLABLES: tuple[str, ...] = (
    "zo", "ka", "mi", "ve", "lu", "tor", "nax", "bel", "qui", "sor", "dan", "fin", "gal", "hex", "jum", "kel",
    "lom", "nim", "pax", "ruv", "sil", "tiv", "wex", "yol", "zen", "bru", "cor", "dex", "fal", "gor",
)
"""Syllables for pseudo-word brand names (brands containing a colour or attribute word are rejected)."""

NORMALIZED_COLORS: tuple[str, ...] = (
    # compound names first, so that "navy blue" normalises to itself and not to "blue"
    "light blue", "dark blue", "navy blue", "sky blue", "royal blue", "baby blue", "light green", "dark green",
    "army green", "mint green", "forest green", "light grey", "dark grey", "charcoal grey", "light gray",
    "dark gray", "hot pink", "light pink", "dusty pink", "rose gold", "wine red", "dark red", "off white",
    "dark brown", "light brown", "coffee brown", "multicolor", "multi color",
    "black", "white", "red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "grey", "gray",
    "beige", "navy", "khaki", "tan", "ivory", "cream", "gold", "silver", "bronze", "copper", "teal",
    "turquoise", "aqua", "cyan", "magenta", "maroon", "burgundy", "wine", "olive", "lime", "mint", "coral",
    "peach", "salmon", "lavender", "lilac", "violet", "plum", "mauve", "fuchsia", "rose", "ruby", "crimson",
    "scarlet", "charcoal", "slate", "taupe", "camel", "chocolate", "coffee", "mocha", "caramel", "mustard",
    "amber", "apricot", "indigo", "cobalt", "denim", "emerald", "jade", "sage", "champagne", "pearl",
    "platinum", "ash", "sand", "stone", "natural", "clear", "transparent", "rainbow",
)
"""Colour names for ``normalize_color``: the first one occurring (as whole words) in a string is its colour."""
