"""The AI2-THOR floor plans shipped inside the ``alfworld`` wheel: their static receptacles (with the pose the agent
stands at) and object types, and ALFRED's train / unseen scene split."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

INSTALL_HINT = "install the ALFWorld extra: pip install 'craft-pl[alfworld]' (alfworld + textworld[pddl])"
SPLIT_DIRS = {"train": "train", "val": "valid_seen", "test": "valid_unseen"}
"""Our split names -> ALFWorld's directory names (val = seen scenes, test = unseen scenes)."""


def alfworld_package_dir() -> Path:
    """Where the installed ``alfworld`` package lives (found without importing it: its import writes to $HOME)."""
    spec = importlib.util.find_spec("alfworld")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the ALFWorld environment needs the alfworld package; {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class Receptacle:
    receptacle_id: str
    """THOR id, e.g. ``Cabinet|+00.68|+00.50|-02.20`` or ``Sink|...|SinkBasin``."""
    receptacle_type: str
    pose: tuple[float, float, int, int]
    """Where the agent stands to interact: x, z, rotation, horizon."""


@dataclass(frozen=True)
class Scene:
    number: int
    room: str
    """``Kitchen``, ``LivingRoom``, ``Bedroom`` or ``Bathroom``."""
    receptacles: tuple[Receptacle, ...]
    object_types: frozenset[str]


def receptacle_type(receptacle_id: str) -> str:
    """ALFRED's type of a receptacle id (sinks and bathtubs are their ``...Basin`` part)."""
    if receptacle_id.endswith(("SinkBasin", "BathtubBasin")):
        return receptacle_id.rsplit("|", 1)[-1]
    return receptacle_id.split("|", 1)[0]


@lru_cache(maxsize=None)
def load_scene(number: int) -> Scene:
    """One floor plan from the wheel's ``gen/layouts`` (static receptacles only: movable ones are skipped, as ALFWorld
    skips movable-receptacle games)."""
    from alfworld.gen import constants

    layouts = alfworld_package_dir() / "gen" / "layouts"
    openable = json.loads((layouts / f"FloorPlan{number}-openable.json").read_text())
    objects = json.loads((layouts / f"FloorPlan{number}-objects.json").read_text())
    static = set(constants.RECEPTACLES) - set(constants.MOVABLE_RECEPTACLES_SET)
    receptacles = tuple(
        Receptacle(rid, receptacle_type(rid), (float(p[0]), float(p[1]), int(p[2]), int(p[3])))
        for rid, p in sorted(openable.items())
        if receptacle_type(rid) in static
    )
    room = next(name for name, numbers in constants.SCENE_TYPE.items() if number in numbers)
    return Scene(number, room, receptacles, frozenset(objects) - static)


@lru_cache(maxsize=None)
def split_scenes(split: str) -> tuple[int, ...]:
    """Scene numbers of a split: ALFRED's train scenes for ``train`` and ``val`` (seen), its test scenes for ``test``
    (unseen), each kept only if the wheel has its layout."""
    from alfworld.gen import constants

    if split not in SPLIT_DIRS:
        raise ValueError(f"unknown split {split!r}; use one of {list(SPLIT_DIRS)}")
    numbers = constants.TEST_SCENE_NUMBERS if split == "test" else constants.TRAIN_SCENE_NUMBERS
    layouts = alfworld_package_dir() / "gen" / "layouts"
    return tuple(n for n in numbers if (layouts / f"FloorPlan{n}-openable.json").exists())
