"""The planner's walkthrough as the expert (warm start, tests): the next step of the game's stored plan, asked
again of the planner from the current state if that step is not admissible."""

from __future__ import annotations

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

    def overruled(self, action: str, changed_state: bool) -> None:
        """An invalid command left the game as it was: the plan's step is still next. A different valid command
        moved the game off the plan: replan at the next turn."""
        if changed_state:
            self._plan = []
        else:
            self._plan.insert(0, action)
