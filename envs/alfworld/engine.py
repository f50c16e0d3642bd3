"""ALFWorld's real engine: textworld's ``PddlEnv`` (fast-downward inside) behind ALFWorld's own ``AlfredDemangler``
and ``AlfredInfos`` wrappers, as ``AlfredTWEnv`` builds it for one game. One engine is reused across games (each
``PddlEnv`` loads a private 34 MB copy of fast-downward's library)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass

from craft_pl.envs.alfworld.scenes import INSTALL_HINT


class AlfWorldEngineError(RuntimeError):
    """The ALFWorld engine or its planner failed on a game (the message names the game file)."""


@contextmanager
def _kept_argv():
    """fast-downward's translator overwrites ``sys.argv``; give the caller theirs back."""
    saved = list(sys.argv)
    try:
        yield
    finally:
        sys.argv[:] = saved


@dataclass
class EngineState:
    feedback: str
    admissible_commands: list[str]
    won: bool
    walkthrough: list[str] | None = None


class Engine:
    """One ALFWorld game at a time: ``load(gamefile)`` then ``reset()`` and ``step(command)``."""

    def __init__(self, with_plan: bool = False) -> None:
        """
        Args:
            with_plan: Ask the planner for a plan after the next resets and steps (the generator's check; slow), until
                ``stop_planning()``. Otherwise the walkthrough stored in the game file comes with each reset.
        """
        try:
            import textworld
            from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
            from textworld.envs.pddl import PddlEnv
        except ImportError as error:
            raise ImportError(f"the ALFWorld environment needs alfworld and textworld[pddl]; {INSTALL_HINT}") from error
        infos = textworld.EnvInfos(won=True, admissible_commands=True, policy_commands=with_plan,
                                   extras=["gamefile"] if with_plan else ["gamefile", "walkthrough"])
        with _kept_argv():
            self._pddl_env = PddlEnv(infos)
        self._env = AlfredInfos(AlfredDemangler(self._pddl_env, shuffle=False))
        self.with_plan = with_plan
        self.gamefile: str | None = None

    def start_planning(self) -> None:
        """A plan after each following reset and step."""
        self._pddl_env.request_infos.policy_commands = True
        self.with_plan = True

    def stop_planning(self) -> None:
        """No more plans after each step (the planner runs only when asked)."""
        self._pddl_env.request_infos.policy_commands = False
        self.with_plan = False

    def load(self, gamefile: str) -> None:
        try:
            with _kept_argv():
                self._env.load(gamefile)
        except Exception as error:  # noqa: BLE001 - re-raised with the game named
            raise AlfWorldEngineError(f"ALFWorld could not load {gamefile}: {error!r}; regenerate it (delete the "
                                      "cached game) or check the official data") from error
        self.gamefile = gamefile

    def _state(self, state) -> EngineState:
        walkthrough = state.get("extra.walkthrough")
        if self.with_plan:
            walkthrough = state.get("policy_commands")
        return EngineState(state["feedback"], [c for c in state["admissible_commands"] if c != "help"],
                           bool(state["won"]), list(walkthrough) if walkthrough is not None else None)

    def reset(self) -> EngineState:
        if self.gamefile is None:
            raise AlfWorldEngineError("Engine.reset: load a game file first")
        try:
            with _kept_argv():
                return self._state(self._env.reset())
        except Exception as error:  # noqa: BLE001
            raise AlfWorldEngineError(f"ALFWorld reset failed on {self.gamefile}: {error!r}") from error

    def step(self, command: str) -> EngineState:
        try:
            with _kept_argv():
                state, _, _ = self._env.step(command)
            return self._state(state)
        except Exception as error:  # noqa: BLE001
            raise AlfWorldEngineError(f"ALFWorld step {command!r} failed on {self.gamefile}: {error!r}") from error

    def close(self) -> None:
        """End the game (the engine is unusable afterwards). fast-downward's library copy is not unloaded:
        ``dlclose`` while textworld objects still point into it crashes the process."""
        if self._pddl_env is None:
            return
        try:
            self._env.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
        self._env = self._pddl_env = None
