"""The official ALFWorld games (``alfworld-download``'s ``json_2.1.1``), when the user has them.

Games are found the way ``AlfredTWEnv.collect_game_files`` finds them (``traj_data.json`` + a solvable
``game.tw-pddl``, movable-receptacle and sliced games left out), in sorted path order so panels do not depend on
the file system.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from craft_pl.envs.alfworld.generator import GameRecord
from craft_pl.envs.alfworld.scenes import SPLIT_DIRS
from craft_pl.envs.alfworld.tasks import TASK_TYPES

GOAL_RE = re.compile(r"Your task is to: (.*?)\.?\"")


def games_root(data_dir: str | os.PathLike) -> Path | None:
    """The folder holding ``train/``, ``valid_seen/``, ``valid_unseen/``: ``data_dir/json_2.1.1`` or ``data_dir``
    itself; ``None`` when neither has them."""
    for candidate in (Path(data_dir) / "json_2.1.1", Path(data_dir)):
        if any((candidate / name).is_dir() for name in SPLIT_DIRS.values()):
            return candidate
    return None


def official_pool(root: Path, split: str, task_types: tuple[str, ...]) -> list[GameRecord]:
    """Every playable game of ``split`` (``train``/``val``=valid_seen/``test``=valid_unseen) of the given types."""
    games = []
    for traj_path in sorted((root / SPLIT_DIRS[split]).rglob("traj_data.json")):
        folder = traj_path.parent
        game_path = folder / "game.tw-pddl"
        if "movable" in str(folder) or "Sliced" in str(folder) or not game_path.exists():
            continue
        task_type = json.loads(traj_path.read_text()).get("task_type")
        if task_type not in TASK_TYPES or task_type not in task_types:
            continue
        game = json.loads(game_path.read_text())
        if not game.get("solvable", False):
            continue
        match = GOAL_RE.search(game.get("grammar", ""))
        goal = match.group(1) if match else ""
        games.append(GameRecord(str(game_path.resolve()), task_type, goal, tuple(game.get("walkthrough") or ())))
    return games
