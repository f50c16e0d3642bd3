"""Privileged context for the teacher: skill text per task type (``skills/*.md``) or a per-task hint, correct
(``hint_text``) or plausible but wrong (``wrong_hint_text``, for the tasks ``hint_reliability`` makes unreliable)."""

from __future__ import annotations

from pathlib import Path

from craft_pl.envs.skills import general_and_specific
from craft_pl.envs.webshop.catalog import Catalog, Product
from craft_pl.envs.webshop.goals import Goal, stable_hash
from craft_pl.envs.webshop.instructions import parse_instruction
from craft_pl.envs.webshop.reward import OptionRule, get_reward
from craft_pl.envs.webshop.search import SearchIndex
from craft_pl.envs.webshop.vocab import TASK_TYPES

SKILL_DIR = Path(__file__).resolve().parent / "skills"
PRIVILEGED_MODES = ("skill", "hint")


def skill_text(task_type: str) -> str:
    """General skills followed by the skills of ``task_type``."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown WebShop task type {task_type!r}; expected one of {list(TASK_TYPES)}")
    return general_and_specific(SKILL_DIR, task_type)


def hint_text(goal: Goal, catalog: Catalog, id_style: str = "short", results_per_page: int = 10) -> str:
    """The clicks that solve one goal, keyed by the page where each is made (the words the observation starts
    with), so that a small model can look its next action up: which result to open on which results page, then
    the options and ``buy now`` on the item page.

    The result to open follows a ``#`` that appears nowhere else in a prompt: the results page lists ``[1]`` ..
    ``[10]``, so a hint written ``click[3]`` gives the model ten look-alike places to copy from, while ``#3`` gives
    one (a tiny model learned to read ``#3`` hints in its warm start where it ignored ``click[3]`` ones)."""
    index = catalog.by_asin.get((goal.answer_asin or goal.asin).lower(), goal.product_index)
    rank = goal.answer_rank if id_style == "rank" else -1
    values = [value for _, value in goal.goal_options]
    return _render(catalog.products[index].asin.lower(), rank, values, results_per_page)


def wrong_hint_text(goal: Goal, catalog: Catalog, search_index: SearchIndex, id_style: str = "short",
                    results_per_page: int = 10, search_return_n: int = 50, option_rule: OptionRule = "master") -> str:
    """A plausible but wrong hint (``hint_reliability``): the same lines as ``hint_text``, but the result to open is
    another result of the instruction's search whose product loses when bought with the hinted options (it misses
    a required attribute or option, or costs too much). Preferred, in order: a result on the answer's page that
    offers every hinted option and is of the asked product type (a look-alike), then any losing result on that
    page, then on any page. Without one, the right result with a wrong option value; failing that, the item page
    stops before ``buy now``. Deterministic: the choice among equals is a hash of the instruction."""
    answer = catalog.by_asin.get((goal.answer_asin or goal.asin).lower(), goal.product_index)
    ranked = goal.answer_rank if id_style == "rank" else -1
    values = [value for _, value in goal.goal_options]
    results = search_index.search(parse_instruction(goal.instruction).descriptor, search_return_n)
    page = max(0, goal.answer_rank) // results_per_page
    on_page = range(page * results_per_page, min(len(results), (page + 1) * results_per_page))
    draw = stable_hash(f"webshop-wrong-hint:{goal.instruction}")
    for ranks in (on_page, range(len(results))):
        tiers: dict[tuple[bool, bool], list[int]] = {}
        for rank in ranks:
            product = catalog.products[results[rank]]
            if results[rank] != answer and not _wins(product, goal, values, option_rule):
                tiers.setdefault((not _offers(product, values), product.query != goal.query), []).append(rank)
        if tiers:
            best = tiers[min(tiers)]
            rank = best[draw % len(best)]
            return _render(catalog.products[results[rank]].asin.lower(), rank if id_style == "rank" else -1, values,
                           results_per_page)
    product = catalog.products[answer]
    for position, (name, value) in enumerate(goal.goal_options):
        others = [v for v in product.option_dict.get(name, ()) if v != value]
        start = draw % max(1, len(others))
        for other in others[start:] + others[:start]:
            wrong = values[:position] + [other] + values[position + 1:]
            if not _wins(product, goal, wrong, option_rule):
                return _render(product.asin.lower(), ranked, wrong, results_per_page)
    return _render(product.asin.lower(), ranked, values, results_per_page, buy=False)


def _render(name: str, rank: int, values: list[str], results_per_page: int, buy: bool = True) -> str:
    """A hint's lines: ``next >`` up to the result's page, the result to open (its place on the page when ``rank``
    is known, else its id), then the option clicks and ``buy now``."""
    lines, page = ["Hint:"], 1
    if rank >= 0:
        page = rank // results_per_page + 1
        lines += [f"results page {p}: click[next >]" for p in range(1, page)]
        name = str(rank % results_per_page + 1)
    lines.append(f"results page {page}: open #{name}")
    item_clicks = [f"click[{value}]" for value in values] + (["click[buy now]"] if buy else [])
    lines.append("item page: " + " then ".join(item_clicks))
    return "\n".join(lines) + "\n"


def _offers(product: Product, values: list[str]) -> bool:
    """Whether the item page lets every hinted option be clicked."""
    return all(any(value in offered for _, offered in product.options) for value in values)


def _wins(product: Product, goal: Goal, values: list[str], option_rule: OptionRule) -> bool:
    """Whether opening ``product``, clicking ``values`` (those it offers) and buying wins, as the browser does it."""
    selected: dict[str, str] = {}
    for value in values:
        name = next((n for n, offered in product.options if value in offered), None)
        if name is not None:
            selected[name] = value
    return get_reward(product, goal, product.price, selected, option_rule).won
