"""Questions of the four Search-R1 kinds over a ``World``, each tagged with its ``data_source``.

- ``single_hop`` (NQ-like): one fact of a named entity, "Where was Orin Valdek born?"
- ``attribute`` (PopQA-like): a categorical attribute, "What is the occupation of Orin Valdek?"
- ``bridge`` (HotpotQA-like): follow ``hops - 1`` links first, "Where was the founder of Velmora Dynamics born?"
- ``comparison`` (HotpotQA-like): two entities, "Who was born first, Orin Valdek or Tesa Brun?"

Questions are split into train / val / test by a stable hash of their text, so the splits never share a question.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass

from craft_pl.envs.search_qa.world import World

DATA_SOURCES = ("single_hop", "bridge", "comparison", "attribute")
SPLITS = ("train", "val", "test")

QUESTIONS = {
    "birthplace": "Where was {} born?",
    "birth_year": "In what year was {} born?",
    "founder": "Who founded {}?",
    "headquarters": "In which city is {} headquartered?",
    "director": "Who directed {}?",
    "occupation": "What is the occupation of {}?",
    "genre": "What is the genre of {}?",
    "industry": "What industry is {} in?",
    "country": "In which country is {}?",
}
"""One question template per relation; ``{}`` is an entity name or a bridge phrase."""
SUBJECT_KIND = {"birthplace": "person", "birth_year": "person", "occupation": "person", "founder": "company",
                "headquarters": "company", "industry": "company", "director": "film", "genre": "film",
                "country": "city"}
SINGLE_HOP = ("birthplace", "birth_year", "founder", "headquarters", "director")
ATTRIBUTE = ("occupation", "genre", "industry", "country")
LINKS = {"founder": ("the founder of {}", "person"), "director": ("the director of {}", "person"),
         "headquarters": ("the headquarters city of {}", "city"), "birthplace": ("the birthplace of {}", "city")}
"""Relations whose value is another entity: the phrase naming that entity, and its kind."""
COMPARISONS = {"person": ("birth_year", "Who was born first, {} or {}?"),
               "company": ("founding_year", "Which company was founded first, {} or {}?"),
               "film": ("release_year", "Which film was released first, {} or {}?"),
               "city": ("founding_year", "Which city was founded first, {} or {}?")}


@dataclass(frozen=True)
class QAItem:
    """One question with its golden answers (any of them scores), kind, gold passages and solving searches."""

    question: str
    golden_answers: tuple[str, ...]
    data_source: str
    gold_doc_ids: tuple[str, ...] = ()
    queries: tuple[str, ...] = ()
    """The searches that find every fact needed (the hint shows them); empty for questions from files."""


@dataclass(frozen=True)
class Plan:
    """What a question asks, read back from its text: a start entity, links to follow, then a relation; or two
    entities to compare on a year."""

    entity: str
    links: tuple[str, ...] = ()
    relation: str = ""
    other: str = ""
    """The second entity of a comparison (then ``relation`` is the compared year)."""


def split_of(question: str, seed: int) -> str:
    """``train`` (80%), ``val`` (10%) or ``test`` (10%), from a stable hash of the question text."""
    bucket = zlib.crc32(f"{seed}/{question}".encode()) % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


def _answers(world: World, value: str) -> tuple[str, ...]:
    """Golden aliases of a value: a person's unique surname counts as well as the full name."""
    entity = world.entities.get(value)
    if entity is None or entity.kind != "person":
        return (value,)
    surname = value.split()[-1]
    clashes = sum(1 for other in world.by_kind["person"] if other.split()[-1] == surname)
    return (value, surname) if clashes == 1 else (value,)


def _relation_question(world: World, rng: random.Random, data_source: str, hops: int) -> QAItem:
    relations = SINGLE_HOP if data_source == "single_hop" else ATTRIBUTE
    if data_source == "bridge":
        chain: list[str] = []
        while len(chain) < hops - 1:  # restart when the chain reaches a kind with no further link
            nexts = sorted(r for r in LINKS if not chain or SUBJECT_KIND[r] == kind)
            chain = chain + [rng.choice(nexts)] if nexts else []
            kind = LINKS[chain[-1]][1] if chain else ""
        relation = rng.choice(sorted(r for r in QUESTIONS if SUBJECT_KIND[r] == kind and r not in chain[-1:]))
        start_kind = SUBJECT_KIND[chain[0]]
    else:
        chain, relation = [], rng.choice(relations)
        start_kind = SUBJECT_KIND[relation]
    name = rng.choice(world.by_kind[start_kind])
    phrase, queries, docs = name, [name], [world.passage_of[name]]
    for link in chain:
        name = world.entities[name].facts[link]
        phrase = LINKS[link][0].format(phrase)
        queries.append(name)
        docs.append(world.passage_of[name])
    answer = world.entities[name].facts[relation]
    return QAItem(QUESTIONS[relation].format(phrase), _answers(world, answer), data_source, tuple(docs),
                  tuple(queries))


def _comparison(world: World, rng: random.Random) -> QAItem:
    kind = rng.choice(sorted(COMPARISONS))
    fact, template = COMPARISONS[kind]
    while True:
        first, second = rng.sample(world.by_kind[kind], 2)
        years = int(world.entities[first].facts[fact]), int(world.entities[second].facts[fact])
        if years[0] != years[1]:
            break
    earlier = first if years[0] < years[1] else second
    return QAItem(template.format(first, second), _answers(world, earlier), "comparison",
                  (world.passage_of[first], world.passage_of[second]), (first, second))


def make_question(world: World, rng: random.Random, data_source: str, hops: int) -> QAItem:
    """One random question of ``data_source`` (bridge questions follow ``hops - 1`` links)."""
    if data_source == "comparison":
        return _comparison(world, rng)
    return _relation_question(world, rng, data_source, hops)


def question_panel(world: World, world_seed: int, split: str, size: int, seed: int, data_sources: tuple[str, ...],
                   hops: int) -> list[QAItem]:
    """``size`` questions of ``split``, kinds drawn uniformly from ``data_sources``; a function of the seeds only."""
    rng = random.Random(f"search_qa/panel/{world_seed}/{split}/{seed}/{hops}")
    items = []
    for _ in range(size):
        data_source = rng.choice(data_sources)
        for _attempt in range(1000):
            item = make_question(world, rng, data_source, hops)
            if split_of(item.question, world_seed) == split:
                break
        else:
            raise ValueError(f"could not draw a {data_source} question of split {split!r} in 1000 tries; "
                             "use a larger num_entities")
        items.append(item)
    return items


def _template_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(r"\{\}", "(.+)") + "$")


_RELATION_RES = [(relation, _template_regex(t)) for relation, t in QUESTIONS.items()]
_COMPARISON_RES = [(fact, re.compile("^" + re.escape(t).replace(r"\{\}", "(.+?)", 1).replace(r"\{\}", "(.+)") + "$"))
                   for fact, t in COMPARISONS.values()]
_LINK_PREFIXES = [(relation, phrase.replace("{}", "")) for relation, (phrase, _) in LINKS.items()]


def parse_question(question: str) -> Plan | None:
    """The plan behind a generated question, or ``None`` if it follows no known template."""
    question = " ".join(question.split())
    for fact, regex in _COMPARISON_RES:
        match = regex.match(question)
        if match:
            return Plan(match.group(1), (), fact, match.group(2))
    for relation, regex in _RELATION_RES:
        match = regex.match(question)
        if not match:
            continue
        phrase, links = match.group(1), []
        peeled = True
        while peeled:
            peeled = False
            for link, prefix in _LINK_PREFIXES:
                if phrase.startswith(prefix):
                    links.append(link)
                    phrase, peeled = phrase[len(prefix):], True
        return Plan(phrase, tuple(reversed(links)), relation)
    return None
