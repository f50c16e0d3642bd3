"""``WebShopEnv``: a self-contained synthetic WebShop behind the ``AgentEnv`` contract."""

from __future__ import annotations

from typing import Any

from craft_pl.envs.base import AgentEnv, Expert, PromptParts, StepResult, Task, Turn
from craft_pl.envs.webshop import text
from craft_pl.envs.webshop.catalog import ID_STYLES, MAX_SHORT_IDS, Catalog, build_catalog
from craft_pl.envs.webshop.expert import WebShopExpert
from craft_pl.envs.webshop.goals import GOAL_FILTERS, SPLITS, Goal, GoalFactory
from craft_pl.envs.webshop.pages import Browser, PageState, admissible
from craft_pl.envs.webshop.privileged import PRIVILEGED_MODES, hint_text, skill_text, wrong_hint_text
from craft_pl.envs.webshop.reward import OPTION_RULES, OptionRule, get_reward
from craft_pl.envs.webshop.search import SearchIndex
from craft_pl.envs.webshop.vocab import PRODUCT_TYPES, TASK_TYPES

WIN_REWARD = 10.0
"""Step reward of a won purchase (verl-agent: 10 x success)."""

_CATALOGS: dict[tuple, tuple[Catalog, SearchIndex]] = {}
_FACTORIES: dict[tuple, GoalFactory] = {}


def clear_caches() -> None:
    """Forget the shared catalogues, search indexes and goal factories (tests use it to rebuild from scratch)."""
    _CATALOGS.clear()
    _FACTORIES.clear()


def shared_catalog(num_products: int, seed: int, num_product_types: int, near_duplicates: int, id_style: str,
                   price_range_prob: float) -> tuple[Catalog, SearchIndex]:
    """The catalogue and its BM25 index, built once per argument tuple and shared by all environments."""
    key = (num_products, seed, num_product_types, near_duplicates, id_style, float(price_range_prob))
    if key not in _CATALOGS:
        catalog = build_catalog(*key)
        _CATALOGS[key] = (catalog, SearchIndex(catalog))
    return _CATALOGS[key]


class WebShopEnv(AgentEnv):
    """Synthetic WebShop: seeded catalogue, BM25 search, WebShop's text pages and actions, WebShop's reward."""

    prompt_styles = text.PROMPT_STYLES
    privileged_modes = PRIVILEGED_MODES

    def __init__(
        self,
        num_products: int = 2000,
        seed: int = 0,
        max_turns: int = 15,
        invalid_action_penalty: float = 0.1,
        results_per_page: int = 10,
        search_return_n: int = 50,
        prompt_style: str = "compact",
        privileged: str = "skill",
        num_product_types: int = 21,
        attributes_per_goal: int = 2,
        options_per_goal: int = 1,
        cheap_goal_bias: int = 3,
        near_duplicates: int = 2,
        id_style: str = "rank",
        goal_filter: str = "first_try",
        price_range_prob: float = 0.1,
        hint_reliability: float = 1.0,
        hint_seed: int = 0,
        option_rule: OptionRule = "master",
    ) -> None:
        """
        Args:
            num_products: Catalogue size (products are generated from ``seed``).
            seed: Catalogue and goal seed (task panels take their own seed in ``task_panel``).
            max_turns: Episode horizon; the episode ends unsold after this many steps.
            invalid_action_penalty: Subtracted by the trainer per invalid turn (the env reward itself has none).
            results_per_page: Search results shown per results page (WebShop: 10).
            search_return_n: Search results returned per query (WebShop: 50).
            prompt_style: ``compact`` (few words, for tiny models) or ``verl_agent`` (verl-agent's template).
            privileged: Teacher context: ``skill`` (general + task-type skill text) or ``hint`` (per-task answer).
            num_product_types: Product types in the catalogue (1-42, bucket-interleaved; >= 7 covers all buckets).
            attributes_per_goal: Attributes each goal asks for (1-3; more = more to check per result).
            options_per_goal: Options each goal asks for (0 = none, 1 = colour/scent/flavour, 2 = and size/style).
            cheap_goal_bias: Goals target the cheapest of this many same-type products (1 = uniform as in WebShop;
                more = tighter price ceilings, so more look-alikes on the results page cost too much).
            near_duplicates: Look-alike products per product family (same type and title words, other price).
            id_style: How results name products: ``rank`` (their place on the page, 1-10: nothing to copy),
                ``short`` (``B7QX``) or ``asin`` (``B0`` + 8 characters, as WebShop).
            goal_filter: Keep goals whose first fitting page-1 result wins (``first_try``), any page-1 win
                (``page1``), or all goals (``none``).
            price_range_prob: Share of products priced as a range (the paid price is drawn inside it).
            hint_reliability: Share of tasks whose ``hint`` is correct, in [0, 1]; the others get a plausible wrong
                one (another result, which misses an asked attribute or option). Does not apply to ``skill``.
            hint_seed: Seed of which tasks get a wrong hint (a hash of task id and this seed only: every method and
                ``seed_everything`` value sees the same ones).
            option_rule: How purchased options count: ``master`` (WebShop's master and verl-agent: per goal option) or
                ``v2`` (WebShop's unmerged v2 branch, commit 6ba9969: per purchased option, with a product-text
                look-up; the rule of this project's WebShop records before 2026-12-07). It decides wins and, through
                ``goal_filter``, which goals exist.
        """
        super().__init__(max_turns, invalid_action_penalty, prompt_style, privileged)
        self.set_hint_reliability(hint_reliability, hint_seed)
        self._check_args(locals())
        self.num_products = num_products
        self.seed = seed
        self.results_per_page = results_per_page
        self.search_return_n = search_return_n
        self.num_product_types = num_product_types
        self.attributes_per_goal = attributes_per_goal
        self.options_per_goal = options_per_goal
        self.cheap_goal_bias = cheap_goal_bias
        self.near_duplicates = near_duplicates
        self.id_style = id_style
        self.goal_filter = goal_filter
        self.price_range_prob = price_range_prob
        self.option_rule = option_rule
        catalog_ids = "asin" if id_style == "asin" else "short"
        self.catalog, self.search_index = shared_catalog(
            num_products, seed, num_product_types, near_duplicates, catalog_ids, price_range_prob
        )
        key = (num_products, seed, num_product_types, near_duplicates, catalog_ids, float(price_range_prob),
               attributes_per_goal, options_per_goal, cheap_goal_bias, goal_filter, results_per_page,
               search_return_n, option_rule)
        if key not in _FACTORIES:
            _FACTORIES[key] = GoalFactory(self.catalog, self.search_index, seed, attributes_per_goal, options_per_goal,
                                          cheap_goal_bias, goal_filter, results_per_page, search_return_n, option_rule)
        self._goals = _FACTORIES[key]
        self._goal: Goal | None = None
        self._browser: Browser | None = None
        self._state = PageState()

    @staticmethod
    def _check_args(args: dict[str, Any]) -> None:
        def need(ok: bool, name: str, fix: str) -> None:
            if not ok:
                raise ValueError(f"WebShopEnv: {name}={args[name]!r} is invalid; {fix}")

        need(isinstance(args["num_products"], int) and args["num_products"] >= 20, "num_products",
             "use an int >= 20")
        need(args["id_style"] in ID_STYLES, "id_style", f"use one of {list(ID_STYLES)}")
        need(args["id_style"] == "asin" or args["num_products"] <= MAX_SHORT_IDS, "num_products",
             f"id_style='{args['id_style']}' supports at most {MAX_SHORT_IDS} products; use id_style='asin' or fewer "
             "products")
        need(isinstance(args["seed"], int), "seed", "use an int")
        need(isinstance(args["results_per_page"], int) and args["results_per_page"] >= 1, "results_per_page",
             "use an int >= 1")
        need(isinstance(args["search_return_n"], int) and args["search_return_n"] >= args["results_per_page"],
             "search_return_n", "use an int >= results_per_page")
        need(isinstance(args["num_product_types"], int) and 1 <= args["num_product_types"] <= len(PRODUCT_TYPES),
             "num_product_types", f"use an int in [1, {len(PRODUCT_TYPES)}]")
        need(args["attributes_per_goal"] in (1, 2, 3), "attributes_per_goal", "use 1, 2 or 3")
        need(args["options_per_goal"] in (0, 1, 2), "options_per_goal", "use 0, 1 or 2")
        need(isinstance(args["cheap_goal_bias"], int) and 1 <= args["cheap_goal_bias"] <= 20, "cheap_goal_bias",
             "use an int in [1, 20]")
        need(isinstance(args["near_duplicates"], int) and 0 <= args["near_duplicates"] <= 10, "near_duplicates",
             "use an int in [0, 10]")
        need(args["goal_filter"] in GOAL_FILTERS, "goal_filter", f"use one of {list(GOAL_FILTERS)}")
        need(0.0 <= args["price_range_prob"] <= 1.0, "price_range_prob", "use a probability in [0, 1]")
        need(args["option_rule"] in OPTION_RULES, "option_rule", f"use one of {list(OPTION_RULES)}")

    # ------------------------------------------------------------------ tasks
    def task_panel(self, split: str, size: int, seed: int) -> list[Task]:
        if split not in SPLITS:
            raise ValueError(f"WebShopEnv.task_panel: split={split!r} is invalid; use one of {list(SPLITS)}")
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"WebShopEnv.task_panel: size={size!r} is invalid; use an int >= 0")
        goals = self._goals.panel(split, size, seed)
        return [Task(f"webshop/{split}/{seed}/{i:05d}", g.task_type, g.instruction, g) for i, g in enumerate(goals)]

    @property
    def task_types(self) -> list[str]:
        return list(TASK_TYPES)

    # ------------------------------------------------------------------ episode
    def start(self, task: Task) -> str:
        goal = task.payload
        if not isinstance(goal, Goal):
            raise ValueError(f"WebShopEnv.reset: task {task.task_id!r} has no WebShop goal payload")
        if self.catalog.by_asin.get(goal.asin.lower()) != goal.product_index:
            raise ValueError(f"WebShopEnv.reset: task {task.task_id!r} comes from another catalogue; build the env "
                             "with the same num_products/seed/num_product_types/near_duplicates/id_style")
        self._goal = goal
        self._browser = Browser(self.catalog, self.search_index, task.instruction, self.results_per_page,
                                self.search_return_n, self.id_style)
        self._state = PageState()
        return self.observation

    @property
    def observation(self) -> str:
        """The current page as text."""
        if self._browser is None:
            return ""
        return self._browser.render(self._state)[0]

    @property
    def admissible_actions(self) -> list[str]:
        if self._browser is None or self.done:
            return []
        return admissible(self._browser.clickables(self._state), has_search_bar=self._state.kind == "search")

    def observation_after_end(self) -> str:
        return self.observation

    def transition(self, action: str | None) -> StepResult:
        new_state, bought = self._apply(action)
        valid = new_state is not None
        if valid:
            self._state = new_state
        reward, info = 0.0, {"valid_action": valid, "won": False, "score": 0.0}
        if bought:
            product = self.catalog.products[self._state.item]
            outcome = get_reward(product, self._goal, product.price, dict(self._state.selected), self.option_rule)
            info.update(won=outcome.won, score=outcome.total, r_type=outcome.r_type,
                        attribute_matches=outcome.attribute_matches, option_matches=outcome.option_matches,
                        r_price=outcome.r_price, purchased=product.asin)
            reward = WIN_REWARD * outcome.won
        return StepResult(self.observation, reward, bought, info)

    def _apply(self, action: str | None) -> tuple[PageState | None, bool]:
        action = text.normalize_action(action)
        if action is None:
            return None, False
        verb, argument = action[:-1].split("[", 1)
        if verb == "search":
            return self._browser.search(self._state, argument), False
        return self._browser.click(self._state, argument)

    # ------------------------------------------------------------------ text
    def parse_action(self, text_: str) -> tuple[str | None, bool]:
        return text.parse_action(text_)

    def format_response(self, action: str) -> str:
        return text.format_response(action)

    def prompt(self, task: Task, history: list[Turn], observation: str, step_index: int) -> PromptParts:
        if self.prompt_style == "verl_agent":
            return text.verl_agent_prompt(task.instruction, list(history), observation, step_index)
        return text.compact_prompt(task.instruction, list(history), observation)

    def make_expert(self) -> Expert:
        return WebShopExpert()

    def skill_context(self, task: Task) -> str:
        return skill_text(task.task_type)

    def hint_context(self, task: Task) -> str:
        return hint_text(self._goal_of(task), self.catalog, self.id_style, self.results_per_page)

    def wrong_hint_context(self, task: Task) -> str:
        return wrong_hint_text(self._goal_of(task), self.catalog, self.search_index, self.id_style,
                               self.results_per_page, self.search_return_n, self.option_rule)

    @staticmethod
    def _goal_of(task: Task) -> Goal:
        if not isinstance(task.payload, Goal):
            raise ValueError(f"WebShopEnv.privileged_context: task {task.task_id!r} has no WebShop goal")
        return task.payload

    def close(self) -> None:
        self._browser = None
        self._goal = None
