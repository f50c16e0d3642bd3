"""Synthetic goals (WebShop's ``get_synthetic_goals`` style), train/val/test splits and task panels.

A goal is drawn from a product: some of its title attributes, a value of its first ``options_per_goal`` options and a
price ceiling. The split of a goal is a hash of its instruction text, so the three splits never share a goal, whatever
panel seed or size is asked for. A panel is a hash-driven walk over goal ids, so it depends only on
``(split, size, seed)`` and on the catalogue/goal settings (a panel of n tasks is the first n tasks of a larger one).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, replace

from craft_pl.envs.webshop.catalog import Catalog, Product
from craft_pl.envs.webshop.instructions import make_instruction, parse_instruction, price_bounds, title_has_all
from craft_pl.envs.webshop.reward import NO_PRICE_LIMIT, OptionRule, get_reward, price_upper
from craft_pl.envs.webshop.search import SearchIndex

SPLITS = ("train", "val", "test")
GOAL_FILTERS = ("first_try", "page1", "none")
"""``first_try``: the first page-1 result whose title has every asked word and whose price is under the ceiling wins
(no backtracking needed); ``page1``: some page-1 result wins; ``none``: every goal."""
GOALS_PER_PRODUCT = 8
"""Size of the goal-id space per product (distinct attribute subsets, option values and ceilings)."""
_SPLIT_BUCKETS = {0: "test", 1: "val"}
"""Instruction hash modulo 10: 0 is test, 1 is val, the rest (80%) is train."""


def stable_hash(text: str) -> int:
    """A process-independent 64-bit hash (Python's ``hash`` of a str is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def split_of(instruction: str) -> str:
    return _SPLIT_BUCKETS.get(stable_hash(f"webshop-split:{instruction}") % 10, "train")


@dataclass(frozen=True)
class Goal:
    """A task's private payload: what the instruction asks for and which product it was drawn from."""

    goal_id: int
    asin: str
    """The product the goal was drawn from."""
    product_index: int
    query: str
    product_category: str
    name_nouns: tuple[str, ...]
    attributes: tuple[str, ...]
    goal_options: tuple[tuple[str, str], ...]
    price_upper: float
    instruction: str
    task_type: str
    answer_asin: str = ""
    """A product that fully satisfies the goal and that the first results page shows (for hints); may be ``""``."""
    answer_rank: int = -1
    """Rank (0-based) of ``answer_asin`` in the results of the instruction's descriptor; -1 when unknown."""


def make_goal(catalog: Catalog, seed: int, goal_id: int, attributes_per_goal: int, options_per_goal: int,
              cheap_goal_bias: int = 1) -> Goal:
    """The goal with id ``goal_id`` (deterministic; its own ``random.Random``).

    Its product is the cheapest of ``cheap_goal_bias`` products of one type (the first is ``goal_id`` modulo the
    catalogue size): 1 draws products uniformly as WebShop does; more gives lower price ceilings, so more of the
    look-alikes on the results page cost too much.
    """
    rng = random.Random(f"webshop-goal:{seed}:{goal_id}")
    product = catalog.products[goal_id % len(catalog.products)]
    siblings = catalog.by_query[product.query]
    for _ in range(cheap_goal_bias - 1):
        other = catalog.products[siblings[rng.randrange(len(siblings))]]
        if other.price < product.price:
            product = other
    attributes = tuple(rng.sample(product.title_attributes, min(attributes_per_goal, len(product.title_attributes))))
    options = tuple((name, rng.choice(values)) for name, values in product.options[:options_per_goal])
    upper = price_upper(product.price, rng)
    instruction = make_instruction(attributes, product.query, options, None if upper >= NO_PRICE_LIMIT else upper)
    return Goal(
        goal_id=goal_id,
        asin=product.asin,
        product_index=product.index,
        query=product.query,
        product_category=product.product_category,
        name_nouns=product.name_nouns,
        attributes=attributes,
        goal_options=options,
        price_upper=upper,
        instruction=instruction,
        task_type=product.task_type,
    )


def wins_with_goal_options(product: Product, goal: Goal, option_rule: OptionRule = "master") -> bool:
    """Whether buying ``product`` with exactly the goal's option values (if it offers them) scores 1.0."""
    offered = product.option_dict
    if any(value not in offered.get(name, ()) for name, value in goal.goal_options):
        return False
    return get_reward(product, goal, product.price, dict(goal.goal_options), option_rule).won


class GoalFactory:
    """Goals, split membership and the solvability filter of one catalogue and goal configuration (memoised)."""

    def __init__(self, catalog: Catalog, search_index: SearchIndex, seed: int, attributes_per_goal: int,
                 options_per_goal: int, cheap_goal_bias: int, goal_filter: str, results_per_page: int,
                 search_return_n: int, option_rule: OptionRule = "master") -> None:
        self.catalog, self.search_index, self.seed = catalog, search_index, seed
        self.attributes_per_goal, self.options_per_goal = attributes_per_goal, options_per_goal
        self.cheap_goal_bias = cheap_goal_bias
        self.goal_filter, self.results_per_page, self.search_return_n = goal_filter, results_per_page, search_return_n
        self.option_rule = option_rule
        self._memo: dict[int, tuple[str, Goal | None]] = {}
        self._panels: dict[tuple[str, int, int], list[Goal]] = {}

    def goal(self, goal_id: int) -> tuple[str, Goal | None]:
        """``(split, goal or None when the filter drops it)``."""
        hit = self._memo.get(goal_id)
        if hit is None:
            goal = make_goal(self.catalog, self.seed, goal_id, self.attributes_per_goal, self.options_per_goal,
                             self.cheap_goal_bias)
            split = split_of(goal.instruction)
            hit = (split, self._check(goal))
            self._memo[goal_id] = hit
        return hit

    def _check(self, goal: Goal) -> Goal | None:
        parsed = parse_instruction(goal.instruction)
        results = self.search_index.search(parsed.descriptor, self.search_return_n)
        products = self.catalog.products
        if self.goal_filter == "first_try":
            for rank, index in enumerate(results[: self.results_per_page]):
                product = products[index]
                bounds = price_bounds(product.pricing)
                if title_has_all(product.title, parsed.descriptor) and bounds and bounds[1] <= goal.price_upper:
                    if wins_with_goal_options(product, goal, self.option_rule):
                        return replace(goal, answer_asin=product.asin, answer_rank=rank)
                    return None
            return None
        window = results[: self.results_per_page] if self.goal_filter == "page1" else results
        for rank, index in enumerate(window):
            if wins_with_goal_options(products[index], goal, self.option_rule):
                return replace(goal, answer_asin=products[index].asin, answer_rank=rank)
        return None if self.goal_filter == "page1" else goal

    def panel(self, split: str, size: int, seed: int) -> list[Goal]:
        """``size`` distinct goals of ``split`` for panel seed ``seed``."""
        key = (split, size, seed)
        if key in self._panels:
            return list(self._panels[key])
        space = len(self.catalog.products) * GOALS_PER_PRODUCT
        goals: list[Goal] = []
        seen: set[str] = set()
        limit = 60 * size + 20_000
        step = 0
        while len(goals) < size:
            if step >= limit:
                raise ValueError(
                    f"task_panel: found only {len(goals)} of size={size} distinct '{split}' goals; ask for a smaller "
                    "size, raise num_products, or use goal_filter='page1'/'none'"
                )
            goal_id = stable_hash(f"webshop-panel:{split}:{seed}:{step}") % space
            step += 1
            goal_split, goal = self.goal(goal_id)
            if goal_split != split or goal is None or goal.instruction in seen:
                continue
            seen.add(goal.instruction)
            goals.append(goal)
        self._panels[key] = goals
        return list(goals)
