"""ALFWorld's experts (warm start, tests). ``WalkthroughExpert``: the next step of the game's stored plan, asked again
of the planner from the current state if that step is not admissible; it knows where every object is.
``ExploringExpert``: the same plan, but it only walks to an object it has seen; until then it searches the room's
receptacles in the order they are listed, so its demonstrations can be imitated from what the agent sees."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from craft_pl.envs.base import Expert

if TYPE_CHECKING:
    from craft_pl.envs.alfworld.env import AlfWorldEnv


class WalkthroughExpert(Expert):
    """Plays the walkthrough of the game its environment was last reset on.

    Unlike WebShop's expert it reads the plan from its environment (the plan is not in the text the agent sees), so
    it is made by ``AlfWorldEnv.make_expert()`` and must be reset right after the environment.
    """

    def __init__(self, env: "AlfWorldEnv") -> None:
        self.env = env
        self._plan: list[str] = []

    def reset(self, instruction: str) -> None:
        self._plan = list(self.env.walkthrough)

    def act(self, observation: str, admissible_actions: list[str]) -> str:
        if not self._plan or self._plan[0] not in admissible_actions:
            self._plan = self.env.replan()
        if not self._plan:
            return "look"  # the planner sees no way to win from here; an admissible no-op
        return self._plan.pop(0)

    def overruled(self, action: str, executed_valid: bool) -> None:
        """An invalid command left the game as it was: the plan's step is still next. A different valid command
        may have moved the game off the plan: replan at the next turn."""
        if executed_valid:
            self._plan = []
        else:
            self._plan.insert(0, action)


_ARRIVE = re.compile(r"You arrive at ([a-z]+ \d+)\.")
_OPEN = re.compile(r"You open the ([a-z]+ \d+)\.")
_NEEDS_SIGHT = re.compile(r"^(?:take ([a-z]+ \d+) from [a-z]+ \d+|use ([a-z]+ \d+))$")
"""Plan steps that act on an object, which the agent must have seen first: ``take X from R``, ``use X``."""


class ExploringExpert(WalkthroughExpert):
    """The planner's plan, with the object locations it cannot know yet replaced by a search.

    Before the plan walks to an object the observations have not shown (the target, the second target of
    ``pick_two``, the lamp), the expert goes to the next receptacle it has not visited, in the order the admissible
    commands list them, and opens it if it is closed. Once the object appears in an observation the plan resumes.
    Reads the observations the agent sees; the plan only says which object to look for (the task names it) and how
    to finish once it is found."""

    def reset(self, instruction: str) -> None:
        super().reset(instruction)
        self._seen, self._visited, self._opened, self._here = "", set(), set(), ""
        self._searching = False

    def overruled(self, action: str, executed_valid: bool) -> None:
        """A search step needs nothing put back (the search picks again from what it has seen); a plan step is
        handled as the walkthrough expert does."""
        if executed_valid or not self._searching:
            super().overruled(action, executed_valid)

    def act(self, observation: str, admissible_actions: list[str]) -> str:
        self._seen += " " + observation
        arrived, opened = _ARRIVE.search(observation), _OPEN.search(observation)
        if arrived:
            self._here = arrived.group(1)
            self._visited.add(self._here)
        if opened:
            self._opened.add(opened.group(1))
        while self._plan and self._plan[0] in (f"go to {self._here}", f"open {self._here}") \
                and self._plan[0] not in admissible_actions:  # the search already did it: no need to replan
            self._plan.pop(0)
        planned = super().act(observation, admissible_actions)
        search = self._search_step(admissible_actions) if self._unseen_object_ahead(planned) else None
        self._searching = search is not None
        if search is None:  # nothing unseen ahead, or every receptacle visited and opened: follow the plan
            return planned
        self._plan.insert(0, planned)  # not taken now: the plan resumes once the object is found
        return search

    def _unseen_object_ahead(self, planned: str) -> bool:
        """Whether the plan, from ``planned`` on, acts on an object no observation has shown yet, before any other
        object-taking step (the search is for the next object the plan needs)."""
        for step in [planned, *self._plan]:
            match = _NEEDS_SIGHT.match(step)
            if match:
                name = match.group(1) or match.group(2)
                return re.search(rf"\b{re.escape(name)}\b", self._seen) is None
        return False

    def _search_step(self, admissible_actions: list[str]) -> str | None:
        if self._here and self._here not in self._opened and f"open {self._here}" in admissible_actions:
            return f"open {self._here}"
        for action in admissible_actions:
            if action.startswith("go to ") and action[len("go to "):] not in self._visited:
                return action
        return None
