"""``AlfWorldEnv``: ALFWorld on its real engine (textworld + fast-downward) behind the ``AgentEnv`` contract."""

from __future__ import annotations

import logging
import os
import random

from craft_pl.envs.alfworld import text
from craft_pl.envs.alfworld.engine import AlfWorldEngineError, Engine
from craft_pl.envs.alfworld.expert import ExploringExpert, WalkthroughExpert
from craft_pl.envs.alfworld.generator import GameGenerator, GameRecord, GeneratorSettings
from craft_pl.envs.alfworld.official import games_root, official_pool
from craft_pl.envs.alfworld.privileged import PRIVILEGED_MODES, hint_text, skill_text, wrong_hint_text
from craft_pl.envs.alfworld.scenes import SPLIT_DIRS
from craft_pl.envs.alfworld.tasks import TASK_TYPES
from craft_pl.envs.base import AgentEnv, Expert, PromptParts, StepResult, Task, Turn, require

log = logging.getLogger(__name__)
WIN_REWARD = 10.0
"""Reward of the winning step (verl-agent: 10 x won)."""
NOTHING_HAPPENS = "Nothing happens."
"""ALFWorld's reply to a command it does not admit."""

_POOLS: dict[tuple, list[GameRecord]] = {}
EXPERTS = ("planner", "explorer")


def clear_caches() -> None:
    """Forget the in-memory game pools (the on-disk cache stays)."""
    _POOLS.clear()


class AlfWorldEnv(AgentEnv):
    """ALFWorld text games on the unmodified engine: our generated games by default, the official ones when given."""

    prompt_styles = text.PROMPT_STYLES
    privileged_modes = PRIVILEGED_MODES

    def __init__(
        self,
        data_dir: str | None = None,
        seed: int = 0,
        task_types: list[str] | None = None,
        train_games: int = 120,
        eval_games: int = 60,
        num_receptacles: int = 6,
        num_distractors: int = 3,
        max_plan_length: int = 0,
        scenes: list[int] | None = None,
        max_turns: int = 50,
        invalid_action_penalty: float = 0.1,
        prompt_style: str = "compact",
        privileged: str = "skill",
        cache_dir: str | None = None,
        hint_reliability: float = 1.0,
        hint_seed: int = 0,
        expert: str = "planner",
    ) -> None:
        """
        Args:
            data_dir: Official ALFWorld data (the folder holding ``json_2.1.1``, as ``alfworld-download`` makes it);
                default ``$ALFWORLD_DATA`` when it holds games, else our generated games.
            seed: Generator seed (task panels take their own seed in ``task_panel``).
            task_types: ALFWorld task types to play (default all six).
            train_games: Generated games in the train pool (panels draw from it).
            eval_games: Generated games in each of the val (seen scenes) and test (unseen scenes) pools.
            num_receptacles: Receptacles per generated room (0 = the whole floor plan).
            num_distractors: Objects besides the targets in a generated room.
            max_plan_length: Skip generated games whose planner solution is longer (0 = no limit).
            scenes: Only these floor plans (numbers) for generated games (default all).
            max_turns: Episode horizon (ALFWorld in verl-agent: 50).
            invalid_action_penalty: Subtracted by the trainer per invalid turn (the env reward itself has none).
            prompt_style: ``compact`` (few words, for tiny models) or ``verl_agent`` (verl-agent's template).
            privileged: Teacher context: ``skill`` (general + task-type skills) or ``hint`` (the game's walkthrough).
            cache_dir: Where generated games live (default ``$CRAFT_PL_CACHE`` or ``~/.cache/craft_pl``).
            hint_reliability: Share of tasks whose ``hint`` is correct, in [0, 1]; the others get a plausible wrong
                walkthrough (the object goes to a receptacle of another type). Does not apply to ``skill``.
            hint_seed: Seed of which tasks get a wrong hint (a hash of task id and this seed only: every method and
                ``seed_everything`` value sees the same ones).
            expert: Who plays the warm start's plain demonstrations: ``planner`` (the walkthrough: it walks straight
                to objects it has never seen, which the agent cannot imitate) or ``explorer`` (the same plan, but it
                searches the receptacles in listed order until the object appears). Privileged demonstrations (whose
                hint reveals the walkthrough) are always played by the planner.
        """
        super().__init__(max_turns, invalid_action_penalty, prompt_style, privileged)
        self.set_hint_reliability(hint_reliability, hint_seed)
        require(expert in EXPERTS, "AlfWorldEnv", "expert", expert, f"use one of {list(EXPERTS)}")
        self.expert = expert
        for name, value in (("train_games", train_games), ("eval_games", eval_games)):
            require(isinstance(value, int) and value >= 1, "AlfWorldEnv", name, value, "use an int >= 1")
        self.settings = GeneratorSettings(tuple(task_types or TASK_TYPES), num_receptacles, num_distractors,
                                          max_plan_length, tuple(scenes or ()), seed)
        self.data_root = self._official_root(data_dir)
        self.seed = seed
        self.train_games = train_games
        self.eval_games = eval_games
        self.cache_dir = cache_dir
        self._engine: Engine | None = None
        self._planner: Engine | None = None
        self._game: GameRecord | None = None
        self._admissible: list[str] = []
        self._observation = ""
        self._walkthrough: tuple[str, ...] = ()
        self._taken: list[str] = []
        self._won = False

    @staticmethod
    def _official_root(data_dir: str | None):
        if data_dir is not None:
            root = games_root(data_dir)
            if root is None:
                raise ValueError(f"AlfWorldEnv: data_dir={data_dir!r} holds no ALFWorld games (expected "
                                 "json_2.1.1/{train,valid_seen,valid_unseen}); run alfworld-download there, or leave "
                                 "data_dir unset to use generated games")
            return root
        from_env = os.environ.get("ALFWORLD_DATA")
        return games_root(from_env) if from_env else None

    # ------------------------------------------------------------------ tasks
    def pool(self, split: str) -> list[GameRecord]:
        """All games of ``split`` (official, or generated and cached), shared by every instance in the process."""
        if split not in SPLIT_DIRS:
            raise ValueError(f"AlfWorldEnv: split={split!r} is invalid; use one of {list(SPLIT_DIRS)}")
        size = self.train_games if split == "train" else self.eval_games
        key = (str(self.data_root), self.settings, self.cache_dir, split, size if self.data_root is None else 0)
        if key not in _POOLS:
            if self.data_root is not None:
                games = official_pool(self.data_root, split, self.settings.task_types)
                where = f"official data at {self.data_root}"
            else:
                generator = GameGenerator(self.settings, self.cache_dir)
                try:
                    games = generator.pool(split, size)
                finally:
                    generator.close()
                where = f"the generator ({generator.reports[split].skipped_games} of {size} skipped, failed " \
                        f"attempts: {dict(generator.reports[split].failed_attempts)})"
            if not games:
                raise ValueError(f"AlfWorldEnv: no playable {split} game from {where}; widen task_types/scenes, raise "
                                 "num_receptacles or max_plan_length")
            _POOLS[key] = games
        return _POOLS[key]

    def task_panel(self, split: str, size: int, seed: int) -> list[Task]:
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"AlfWorldEnv.task_panel: size={size!r} is invalid; use an int >= 0")
        games = self.pool(split)
        if split == "train":
            rng = random.Random(f"alfworld-panel/{split}/{seed}")
            picks = [rng.randrange(len(games)) for _ in range(size)]
        else:  # evaluation panels walk the (type-balanced) pool in order
            picks = [i % len(games) for i in range(size)]
        return [Task(f"alfworld/{split}/{seed}/{i:05d}", games[g].task_type, games[g].goal, games[g])
                for i, g in enumerate(picks)]

    @property
    def task_types(self) -> list[str]:
        return list(self.settings.task_types)

    # ------------------------------------------------------------------ episode
    def start(self, task: Task) -> str:
        game = task.payload
        if not isinstance(game, GameRecord):
            raise ValueError(f"AlfWorldEnv.reset: task {task.task_id!r} has no ALFWorld game payload")
        if self._engine is None:
            self._engine = Engine()
        self._engine.load(game.gamefile)
        state = self._engine.reset()
        self._game = game
        self._observation = state.feedback
        self._admissible = state.admissible_commands
        self._walkthrough = tuple(state.walkthrough or game.walkthrough)
        self._taken = []
        self._won = bool(state.won)
        return self._observation

    @property
    def admissible_actions(self) -> list[str]:
        return [] if self.done else list(self._admissible)

    @property
    def walkthrough(self) -> tuple[str, ...]:
        """The stored planner solution of the current game, from its start."""
        return self._walkthrough

    def observation_after_end(self) -> str:
        return self._observation

    def transition(self, action: str | None) -> StepResult:
        valid = action is not None and action in self._admissible
        if valid:
            state = self._engine.step(action)
            self._taken.append(action)
            self._observation, self._admissible, self._won = state.feedback, state.admissible_commands, state.won
        else:
            self._observation = NOTHING_HAPPENS
        info = {"valid_action": valid, "won": self._won, "score": float(self._won)}
        return StepResult(self._observation, WIN_REWARD * self._won if valid else 0.0, self._won, info)

    def replan(self) -> list[str]:
        """A fresh planner solution from the current state: replays this episode's commands on this environment's
        planning engine, asking the planner only after the last one. One engine for every replan: each new engine
        maps its own 34 MB copy of fast-downward's library, which is never unloaded (``Engine.close``)."""
        if self._game is None:
            raise RuntimeError("AlfWorldEnv.replan: call reset(task) first")
        if self._planner is None:
            self._planner = Engine()
        planner = self._planner
        try:
            planner.load(self._game.gamefile)
            if self._taken:  # the plan is wanted from the state after the last command only
                planner.stop_planning()
            else:
                planner.start_planning()
            state = planner.reset()
            for index, command in enumerate(self._taken):
                if index == len(self._taken) - 1:
                    planner.start_planning()
                state = planner.step(command)
        except AlfWorldEngineError as error:
            raise AlfWorldEngineError(f"the planner could not replay this episode: {error}") from error
        return list(state.walkthrough or [])

    # ------------------------------------------------------------------ text
    def parse_action(self, text_: str) -> tuple[str | None, bool]:
        return text.parse_action(text_)

    def format_response(self, action: str) -> str:
        return text.format_response(action)

    def prompt(self, task: Task, history: list[Turn], observation: str, step_index: int) -> PromptParts:
        """The prompt of the current state: the admissible commands listed are this environment's current ones."""
        actions = self.admissible_actions
        if self.prompt_style == "verl_agent":
            return text.verl_agent_prompt(task.instruction, list(history), observation, step_index, actions)
        return text.compact_prompt(task.instruction, list(history), observation, step_index, actions)

    def make_expert(self) -> Expert:
        return ExploringExpert(self) if self.expert == "explorer" else WalkthroughExpert(self)

    def make_privileged_expert(self) -> Expert:
        """The planner: with the walkthrough in the prompt, walking straight to the object is what the hint says."""
        return WalkthroughExpert(self)

    def skill_context(self, task: Task) -> str:
        return skill_text(task.task_type)

    def hint_context(self, task: Task) -> str:
        return hint_text(self._game_of(task).walkthrough)

    def wrong_hint_context(self, task: Task) -> str:
        game = self._game_of(task)
        return wrong_hint_text(game.walkthrough, game.gamefile, game.goal)

    @staticmethod
    def _game_of(task: Task) -> GameRecord:
        if not isinstance(task.payload, GameRecord):
            raise ValueError(f"AlfWorldEnv.privileged_context: task {task.task_id!r} has no ALFWorld game")
        return task.payload

    def close(self) -> None:
        for engine in (self._engine, self._planner):
            if engine is not None:
                engine.close()
        self._engine = self._planner = None
        self._game = None
