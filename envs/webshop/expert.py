"""Scripted WebShop policy that reads only the instruction, the observation text and the admissible actions."""

from __future__ import annotations

from craft_pl.envs.base import Expert
from craft_pl.envs.webshop.catalog import words
from craft_pl.envs.webshop.instructions import parse_instruction, price_bounds, title_has_all
from craft_pl.envs.webshop.pages import parse_page
from craft_pl.envs.webshop.reward import fuzzy

SEARCH = "search[<your query>]"


class WebShopExpert(Expert):
    """Search the instruction's attributes + type, open the first result whose title has every asked word and whose
    price is under the ceiling (next page if none), click the asked options (back to the results if one is missing),
    buy. It is built without any argument: nothing but strings ever reaches it.
    """

    def __init__(self) -> None:
        self.reset("")

    def reset(self, instruction: str) -> None:
        self._goal = parse_instruction(instruction if isinstance(instruction, str) else "")
        self._tried: set[str] = set()
        self._chosen: set[str] = set()

    def act(self, observation: str, admissible_actions: list[str]) -> str:
        actions = set(admissible_actions)
        page = parse_page(observation)
        if SEARCH in actions:
            return f"search[{self._goal.descriptor}]"
        if page.kind == "results":
            self._chosen = set()
            return self._pick_result(page, actions)
        if page.kind == "item":
            return self._on_item(page, actions)
        if "click[< prev]" in actions:
            return "click[< prev]"
        return admissible_actions[0] if admissible_actions else "click[back to search]"

    def _price_ok(self, price_text: str, use_high: bool = True) -> bool:
        if self._goal.price_upper is None:
            return True
        bounds = price_bounds(price_text)
        return bounds is not None and bounds[1 if use_high else 0] <= self._goal.price_upper

    def _pick_result(self, page, actions: set[str]) -> str:
        fresh = [r for r in page.results if f"{page.page}:{r[0].lower()}" not in self._tried]
        for asin, title, price in fresh:
            if title_has_all(title, self._goal.descriptor) and self._price_ok(price):
                return self._open(page.page, asin)
        if "click[next >]" in actions:
            return "click[next >]"
        wanted = set(words(self._goal.descriptor))
        scored = [
            (len(wanted & set(words(title))) + self._price_ok(price, use_high=False), -i, asin)
            for i, (asin, title, price) in enumerate(fresh)
        ]
        if scored:
            return self._open(page.page, max(scored)[2])
        return "click[< prev]" if "click[< prev]" in actions else "click[back to search]"

    def _open(self, page: int, name: str) -> str:
        """Click a result (remembered per page: with ``rank`` ids, ``3`` names another item on each page)."""
        self._tried.add(f"{page}:{name.lower()}")
        return f"click[{name.lower()}]"

    def _on_item(self, page, actions: set[str]) -> str:
        offered = [value for _, values in page.options for value in values]
        for _, value in self._goal.options:
            if value in self._chosen:
                continue
            match = value if value in offered else next((o for o in offered if fuzzy(o, value) > 85), None)
            if match is None:
                return "click[< prev]"
            self._chosen.add(value)
            if f"click[{match}]" in actions:
                return f"click[{match}]"
        return "click[buy now]"
