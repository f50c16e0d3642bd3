"""Our ALFWorld game generator: rooms sampled from the wheel's floor plans, written in ALFWorld's directory layout
(``json_2.1.1/<split>/<task>-<Obj>-None-<Recep>-<scene>/trial_<n>/{traj_data.json, game.tw-pddl}``), kept only when
the real planner solves them, with the plan stored as the walkthrough (as ``alfworld-generate`` does).

Game ``n`` of a split is a function of (settings, split, n) only and is cached on disk under
``$CRAFT_PL_CACHE`` (or ``~/.cache/craft_pl``) ``/alfworld/<settings digest>/``; a bigger pool reuses a smaller one.
Rooms that cannot pose their task, or that the planner cannot solve, are skipped and counted by reason; every game
gets a bounded number of attempts, so no setting loops forever.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from craft_pl.envs.alfworld.engine import AlfWorldEngineError, Engine
from craft_pl.envs.alfworld.problem import GameSpec, pddl_problem
from craft_pl.envs.alfworld.sampling import sample_spec
from craft_pl.envs.alfworld.scenes import SPLIT_DIRS, alfworld_package_dir, load_scene, split_scenes
from craft_pl.envs.alfworld.tasks import NEEDS, TASK_TYPES, check_task_types

log = logging.getLogger(__name__)
GENERATOR_VERSION = 2
"""Bump when generation changes what a (settings, split, index) produces: old caches are then not reused."""


@dataclass(frozen=True)
class GeneratorSettings:
    """Everything that determines the generated games."""

    task_types: tuple[str, ...] = TASK_TYPES
    """Task types to generate; game ``n`` has type ``task_types[n % len(task_types)]`` (balanced pools)."""
    num_receptacles: int = 6
    """Receptacles per room (0 = all of the floor plan's); the task's own receptacles always stay."""
    num_distractors: int = 3
    """Objects besides the targets (and the lamp) placed in the room."""
    max_plan_length: int = 0
    """Skip games whose planner walkthrough is longer (0 = no limit): a short horizon for small models."""
    scenes: tuple[int, ...] = ()
    """Restrict to these floor plans (intersected with each split's scenes; empty = all)."""
    seed: int = 0

    def __post_init__(self) -> None:
        check_task_types(self.task_types)
        for name in ("num_receptacles", "num_distractors", "max_plan_length"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"ALFWorld generator: {name}={getattr(self, name)!r} is invalid; use an int >= 0")

    def digest(self) -> str:
        text = json.dumps({"version": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GameRecord:
    """One playable game as a task sees it."""

    gamefile: str
    """Absolute path of ``game.tw-pddl``."""
    task_type: str
    goal: str
    walkthrough: tuple[str, ...]
    """The planner's solution from the start state (empty if the data did not store one)."""


@dataclass
class SplitReport:
    """What generating a split's pool produced."""

    games: int = 0
    skipped_games: int = 0
    """Games given up after every attempt failed."""
    failed_attempts: Counter = field(default_factory=Counter)
    """Failed attempts by reason (``no lamp in scene``, ``planner found no plan``, ...)."""


def cache_root(cache_dir: str | None) -> Path:
    root = cache_dir or os.environ.get("CRAFT_PL_CACHE") or Path.home() / ".cache" / "craft_pl"
    return Path(root) / "alfworld"


class GameGenerator:
    """Generates (or reads back from its cache) the pool of games of each split."""

    def __init__(self, settings: GeneratorSettings, cache_dir: str | None = None, attempts_per_game: int = 6) -> None:
        self.settings = settings
        self.root = cache_root(cache_dir) / settings.digest()
        self.data_dir = self.root / "json_2.1.1"
        self.attempts_per_game = attempts_per_game
        self.reports: dict[str, SplitReport] = {}
        self._engine: Engine | None = None
        package = alfworld_package_dir()
        self._domain = (package / "data" / "alfred.pddl").read_text()
        self._grammar = (package / "data" / "alfred.twl2").read_text()

    def pool(self, split: str, count: int) -> list[GameRecord]:
        """The first ``count`` game slots of ``split``, skipped slots left out; logs what was skipped."""
        report = SplitReport()
        games = []
        for index in range(count):
            record = self._record(split, index)
            report.failed_attempts.update(record.get("failed_attempts", {}))
            if "gamefile" in record:
                games.append(GameRecord(str(self.root / record["gamefile"]), record["task_type"], record["goal"],
                                        tuple(record["walkthrough"])))
            else:
                report.skipped_games += 1
        report.games = len(games)
        self.reports[split] = report
        if report.skipped_games or report.failed_attempts:
            (log.warning if report.skipped_games else log.info)("ALFWorld generator (%s): %d of %d %s games skipped; failed attempts by reason: %s",
                        self.root.name, report.skipped_games, count, split, dict(report.failed_attempts))
        return games

    def _record(self, split: str, index: int) -> dict:
        path = self.root / "records" / split / f"{index:05d}.json"
        if path.exists():
            return json.loads(path.read_text())
        record = self._generate(split, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(record, indent=1))
        return record

    def _scenes(self, split: str, task_type: str) -> list[int]:
        allowed = set(self.settings.scenes)
        return [n for n in split_scenes(split)
                if (not allowed or n in allowed) and load_scene(n).room in NEEDS[task_type].rooms]

    def _generate(self, split: str, index: int) -> dict:
        settings = self.settings
        task_type = settings.task_types[index % len(settings.task_types)]
        rng = random.Random(f"alfworld/{settings.seed}/{split}/{index}")
        failures: Counter = Counter()
        scenes = self._scenes(split, task_type)
        if not scenes:
            failures[f"no {split} scene of the rooms where {task_type} is posed"] += 1
            return {"task_type": task_type, "failed_attempts": dict(failures)}
        for attempt in range(self.attempts_per_game):
            spec = sample_spec(task_type, load_scene(rng.choice(scenes)), rng, settings.num_receptacles,
                               settings.num_distractors)
            if isinstance(spec, str):
                failures[spec] += 1
                continue
            outcome = self._write_and_solve(split, index, attempt, spec)
            if isinstance(outcome, str):
                failures[outcome] += 1
                continue
            return {"task_type": task_type, "goal": spec.goal, "gamefile": outcome[0], "walkthrough": outcome[1],
                    "scene": spec.scene, "failed_attempts": dict(failures)}
        return {"task_type": task_type, "failed_attempts": dict(failures)}

    def _write_and_solve(self, split: str, index: int, attempt: int, spec: GameSpec) -> tuple[str, list[str]] | str:
        """Write the game, ask the planner for a walkthrough, replay it on the real engine; the game's path relative
        to the cache root and its walkthrough, or why it was rejected (the directory is then removed)."""
        recep_or_lamp = spec.goal_receptacle or spec.lamp
        name = f"{spec.task_type}-{spec.target}-None-{recep_or_lamp}-{spec.scene}"
        relative = Path("json_2.1.1") / SPLIT_DIRS[split] / name / f"trial_{index:05d}_{attempt}"
        traj_data = {
            "task_type": spec.task_type,
            "task_id": f"{split}_{index:05d}",
            "scene": {"floor_plan": f"FloorPlan{spec.scene}", "scene_num": spec.scene},
            "pddl_params": {"object_target": spec.target, "parent_target": spec.goal_receptacle,
                            "mrecep_target": "", "toggle_target": spec.lamp, "object_sliced": False},
            "turk_annotations": {"anns": [{"task_desc": spec.goal}]},
        }
        game = {"pddl_domain": self._domain, "grammar": self._grammar.replace("UNKNOWN GOAL", spec.goal),
                "pddl_problem": pddl_problem(spec)}
        staging = Path(tempfile.mkdtemp(prefix="game-", dir=self._staging_dir()))
        (staging / "traj_data.json").write_text(json.dumps(traj_data, indent=1))
        (staging / "game.tw-pddl").write_text(json.dumps(game))
        walkthrough = self._solve(str(staging / "game.tw-pddl"))
        if isinstance(walkthrough, str):
            shutil.rmtree(staging, ignore_errors=True)
            return walkthrough
        game.update(solvable=True, walkthrough=walkthrough)
        (staging / "game.tw-pddl").write_text(json.dumps(game))
        final = self.root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, final)
        except OSError:  # another process wrote the same (deterministic) game first
            shutil.rmtree(staging, ignore_errors=True)
        return str(relative / "game.tw-pddl"), walkthrough

    def _staging_dir(self) -> Path:
        path = self.root / "staging"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _solve(self, gamefile: str) -> list[str] | str:
        """The planner's walkthrough if replaying it on the engine wins, else the reason it does not."""
        if self._engine is None:
            self._engine = Engine(with_plan=True)
        engine = self._engine
        try:
            engine.start_planning()
            engine.load(gamefile)
            state = engine.reset()
            engine.stop_planning()
        except AlfWorldEngineError as error:
            log.warning("ALFWorld generator: the engine rejected a game (%s); it is skipped", error)
            return "engine or planner failed"
        plan = state.walkthrough or []
        if state.won:
            return "goal already met at the start"
        if not plan:
            return "planner found no plan"
        if self.settings.max_plan_length and len(plan) > self.settings.max_plan_length:
            return "plan longer than max_plan_length"
        for command in plan:
            if command not in state.admissible_commands:
                return "planner step not admissible"
            try:
                state = engine.step(command)
            except AlfWorldEngineError as error:
                log.warning("ALFWorld generator: replaying the plan failed (%s); the game is skipped", error)
                return "engine or planner failed"
        return list(plan) if state.won else "walkthrough does not win"

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def _write_atomic(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(temporary, path)
