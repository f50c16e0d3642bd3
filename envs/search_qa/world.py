"""A seeded knowledge base of fictional entities, rendered as short Wikipedia-like passages.

Fictional names mean answers can only come from search, never from a model's memory. Four entity kinds (person,
company, city, film) link to each other (a company's founder is a person, a person's birthplace is a city), which is
what bridge questions follow. Distractors share surface words with real entities: look-alike names (``Orin Valdek``
and ``Orin Castell``, ``Velmora Dynamics`` and ``Velmora Records``) and landmarks named after people
(``Orin Valdek Bridge``).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

OCCUPATIONS = ("painter", "architect", "chemist", "novelist", "sculptor", "economist", "composer", "astronomer",
               "engineer", "botanist", "diplomat", "historian", "photographer", "surgeon", "poet", "violinist")
INDUSTRIES = ("shipping", "textile", "mining", "software", "brewing", "publishing", "aviation", "insurance",
              "farming", "railway", "toy", "glass")
GENRES = ("drama", "comedy", "thriller", "western", "musical", "documentary", "horror", "romance")
COMPANY_SUFFIXES = ("Dynamics", "Records", "Holdings", "Works", "Motors", "Press", "Foods", "Labs", "Systems",
                    "Textiles", "Partners", "Studios")
CITY_SUFFIXES = ("Bay", "Falls", "Harbor", "Springs", "Ridge")
LANDMARKS = ("Bridge", "Library", "Park", "Prize", "Museum", "Tower")
FILM_ADJECTIVES = ("Silver", "Quiet", "Broken", "Golden", "Hidden", "Crimson", "Last", "Winter", "Paper", "Iron",
                   "Glass", "Velvet", "Distant", "Burning", "Hollow", "Painted")
FILM_NOUNS = ("Orchard", "Harbor", "Lantern", "Garden", "Frontier", "Mirror", "Voyage", "Kingdom", "River", "Letter",
              "Carnival", "Compass", "Meadow", "Signal", "Tide", "Circus")
_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s", "t", "th", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "ei", "ou")
_CODAS = ("", "", "l", "n", "r", "s", "k", "th", "m")
KINDS = ("person", "company", "city", "film")
_KIND_SHARES = {"person": 0.4, "company": 0.2, "city": 0.2, "film": 0.2}

PASSAGE_TEMPLATES = {
    "person": "{name} is {occupation_article} {occupation} born in {birthplace} in {birth_year}.",
    "company": "{name} is {industry_article} {industry} company founded in {founding_year} by {founder}, based in "
               "{headquarters}.",
    "city": "{name} is a city in {country}, founded in {founding_year}.",
    "film": "{name} is {genre_article} {genre} film directed by {director}, released in {release_year}.",
    "landmark": "{name} is a {landmark} in {city}, named after {person}.",
}
"""How each entity becomes text; the expert reads facts back with ``passage_pattern``."""


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Entity:
    """One fictional entity: its name, its kind and its facts (other entities are referred to by name)."""

    name: str
    kind: str
    facts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Passage:
    """One retrievable document: ``contents`` is ``title + "\\n" + text`` as in Search-R1's wiki-18 corpus."""

    doc_id: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        return f"{self.title}\n{self.text}"


@dataclass
class World:
    """All entities (by name, and by kind in creation order) and the passage corpus."""

    entities: dict[str, Entity]
    by_kind: dict[str, list[str]]
    passages: list[Passage]
    passage_of: dict[str, str]
    """Entity name -> id of its own passage (the gold passage of a question about it)."""


def render(entity: Entity) -> str:
    """The passage text of ``entity``."""
    values = dict(entity.facts, name=entity.name)
    for key in ("occupation", "industry", "genre"):
        if key in values:
            values[f"{key}_article"] = article(values[key])
    return PASSAGE_TEMPLATES[entity.kind].format(**values)


def passage_pattern(kind: str) -> re.Pattern[str]:
    """A regex reading an entity's facts back from its passage text (one named group per fact)."""
    template = re.escape(PASSAGE_TEMPLATES[kind])
    template = re.sub(r"\\\{(\w+)_article\\\}", r"an?", template)
    return re.compile(re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>.+?)", template) + "$")


class _Namer:
    """Unique fictional words and names from syllables, drawn from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        while True:
            word = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables))
            word = (word + self.rng.choice(_CODAS)).capitalize()
            if word not in self.used:
                self.used.add(word)
                return word

    def unique(self, make, fallback) -> str:
        """A name from ``make`` not used before; after 20 clashes one from ``fallback`` (which always varies)."""
        for attempt in range(10_000):
            name = make() if attempt < 20 else fallback()
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("the fictional name space is exhausted; use fewer entities")


def _years(rng: random.Random, low: int, high: int) -> str:
    return str(rng.randint(low, high))


def build_world(num_entities: int, seed: int, look_alike_rate: float, landmark_rate: float) -> World:
    """A world of about ``num_entities`` entities (40% people, 20% each of companies, cities, films), a function of
    its arguments only. ``look_alike_rate`` is the share of names that reuse a word of an earlier name;
    ``landmark_rate`` adds that many distractor passages per person (landmarks named after them)."""
    rng = random.Random(f"search_qa/world/{seed}")
    namer = _Namer(rng)
    counts = {kind: max(2, round(num_entities * share)) for kind, share in _KIND_SHARES.items()}
    countries = [namer.word(2) + "ia" for _ in range(max(3, counts["city"] // 6))]
    names: dict[str, list[str]] = {kind: [] for kind in KINDS}

    def look_alike(kind: str) -> bool:
        return bool(names[kind]) and rng.random() < look_alike_rate

    for _ in range(counts["city"]):
        if look_alike("city"):
            base = rng.choice(names["city"]).split()[0]
            names["city"].append(namer.unique(lambda: f"{base} {rng.choice(CITY_SUFFIXES)}",
                                              lambda: f"{namer.word(2)} {rng.choice(CITY_SUFFIXES)}"))
        else:
            names["city"].append(namer.word(rng.randint(2, 3)))

    def new_person_name() -> str:
        return f"{namer.word(2)} {namer.word(rng.randint(2, 3))}"

    for _ in range(counts["person"]):
        if look_alike("person"):
            first, last = rng.choice(names["person"]).split()
            if rng.random() < 0.5:
                name = namer.unique(lambda: f"{first} {namer.word(rng.randint(2, 3))}", new_person_name)
            else:
                name = namer.unique(lambda: f"{namer.word(2)} {last}", new_person_name)
        else:
            name = namer.unique(new_person_name, new_person_name)
        names["person"].append(name)
    for _ in range(counts["company"]):
        root = rng.choice(names["company"]).split()[0] if look_alike("company") else namer.word(rng.randint(2, 3))
        names["company"].append(namer.unique(lambda: f"{root} {rng.choice(COMPANY_SUFFIXES)}",
                                             lambda: f"{namer.word(3)} {rng.choice(COMPANY_SUFFIXES)}"))
    for _ in range(counts["film"]):
        names["film"].append(namer.unique(lambda: f"The {rng.choice(FILM_ADJECTIVES)} {rng.choice(FILM_NOUNS)}",
                                          lambda: f"The {rng.choice(FILM_ADJECTIVES)} {namer.word(2)}"))

    entities: dict[str, Entity] = {}
    for name in names["city"]:
        entities[name] = Entity(name, "city", {"country": rng.choice(countries),
                                               "founding_year": _years(rng, 900, 1700)})
    for name in names["person"]:
        entities[name] = Entity(name, "person", {"occupation": rng.choice(OCCUPATIONS),
                                                 "birthplace": rng.choice(names["city"]),
                                                 "birth_year": _years(rng, 1820, 1990)})
    for name in names["company"]:
        entities[name] = Entity(name, "company", {"industry": rng.choice(INDUSTRIES),
                                                  "founding_year": _years(rng, 1850, 2010),
                                                  "founder": rng.choice(names["person"]),
                                                  "headquarters": rng.choice(names["city"])})
    for name in names["film"]:
        entities[name] = Entity(name, "film", {"genre": rng.choice(GENRES), "director": rng.choice(names["person"]),
                                               "release_year": _years(rng, 1920, 2020)})
    passages, passage_of = [], {}
    for kind in KINDS:
        for name in names[kind]:
            passage_of[name] = f"d{len(passages)}"
            passages.append(Passage(passage_of[name], name, render(entities[name])))
    for person in names["person"]:
        if rng.random() < landmark_rate:
            landmark = rng.choice(LANDMARKS)
            title = namer.unique(lambda: f"{person} {landmark}", lambda: f"{person} {namer.word(2)} {landmark}")
            text = PASSAGE_TEMPLATES["landmark"].format(name=title, landmark=landmark.lower(),
                                                        city=rng.choice(names["city"]), person=person)
            passages.append(Passage(f"d{len(passages)}", title, text))
    return World(entities, names, passages, passage_of)
