"""Sampling one room for one task type in one scene: target, goal receptacle, the receptacles kept, and where the
targets, distractors and lamp start. Returns a ``GameSpec`` or the reason the scene cannot pose the task."""

from __future__ import annotations

import random

from craft_pl.envs.alfworld.problem import GameSpec, PlacedObject, grid_location
from craft_pl.envs.alfworld.scenes import Receptacle, Scene
from craft_pl.envs.alfworld.tasks import APPLIANCES, LAMP_HOLDERS, LAMP_TYPES, NEEDS, goal_text


def _can_hold(receptacle: Receptacle, object_type: str, constants) -> bool:
    return object_type in constants.VAL_RECEPTACLE_OBJECTS.get(receptacle.receptacle_type, ())


def _movable_types(scene: Scene, constants) -> list[str]:
    """Object types of the scene that some of its receptacles can hold (sliced forms and lamps left out)."""
    return sorted(t for t in scene.object_types
                  if "Sliced" not in t and t not in LAMP_TYPES and any(_can_hold(r, t, constants) for r in scene.receptacles))


def _goal_options(task_type: str, scene: Scene, constants) -> list[tuple[str, str]]:
    """(target type, goal receptacle type) pairs the scene allows: the target has a start receptacle of another type."""
    needs = NEEDS[task_type]
    options = []
    for target in _movable_types(scene, constants):
        if needs.object_property and target not in constants.VAL_ACTION_OBJECTS[needs.object_property]:
            continue
        goals = {r.receptacle_type for r in scene.receptacles if _can_hold(r, target, constants)}
        if needs.object_property:
            goals -= set(APPLIANCES)
        for goal in sorted(goals):
            if any(_can_hold(r, target, constants) and r.receptacle_type not in (goal, "Fridge")
                   for r in scene.receptacles):
                options.append((target, goal))
    return options


def _object_id(object_type: str, rng: random.Random, taken: set[str]) -> str:
    while True:
        x, y, z = (rng.uniform(-3, 3) for _ in range(3))
        object_id = f"{object_type}|{x:+06.2f}|{y:+06.2f}|{z:+06.2f}"
        if object_id not in taken:
            taken.add(object_id)
            return object_id


def sample_spec(task_type: str, scene: Scene, rng: random.Random, num_receptacles: int,
                num_distractors: int) -> GameSpec | str:
    """A room of ``scene`` posing ``task_type``, or why it cannot (a short reason, used as a skip count key).

    ``num_receptacles`` caps the receptacles kept (0 = all of the scene's); the task's receptacles always stay.
    """
    from alfworld.gen import constants

    needs = NEEDS[task_type]
    if needs.appliance and not any(r.receptacle_type in needs.appliance for r in scene.receptacles):
        return f"no {'/'.join(needs.appliance)} in scene"
    lamp, lamp_holder = "", None
    if needs.needs_lamp:
        lamps = sorted(set(LAMP_TYPES) & scene.object_types)
        holders = [r for r in scene.receptacles if r.receptacle_type in LAMP_HOLDERS]
        if not lamps or not holders:
            return "no lamp in scene"
        lamp, lamp_holder = rng.choice(lamps), rng.choice(holders)
        movable = _movable_types(scene, constants)
        if not movable:
            return "no movable object in scene"
        target, goal_type = rng.choice(movable), ""
    else:
        options = _goal_options(task_type, scene, constants)
        if not options:
            return "no fitting target object"
        target, goal_type = rng.choice(options)

    kept: dict[str, Receptacle] = {}
    if goal_type:
        goal_recep = rng.choice([r for r in scene.receptacles if r.receptacle_type == goal_type])
        kept[goal_recep.receptacle_id] = goal_recep
    if needs.appliance:
        appliance = rng.choice([r for r in scene.receptacles if r.receptacle_type in needs.appliance])
        kept[appliance.receptacle_id] = appliance
    if lamp_holder is not None:
        kept[lamp_holder.receptacle_id] = lamp_holder
    sources = [r for r in scene.receptacles
               if _can_hold(r, target, constants) and r.receptacle_type not in (goal_type, "Fridge")]
    if not sources:
        return "no start receptacle for the target"
    taken: set[str] = set()
    objects = []
    for _ in range(needs.targets):
        source = rng.choice(sources)
        kept[source.receptacle_id] = source
        objects.append(PlacedObject(_object_id(target, rng, taken), target, source.receptacle_id))
    others = [r for r in scene.receptacles if r.receptacle_id not in kept]
    rng.shuffle(others)
    room_size = len(scene.receptacles) if num_receptacles <= 0 else max(num_receptacles, len(kept))
    for receptacle in others[: max(0, room_size - len(kept))]:
        kept[receptacle.receptacle_id] = receptacle
    room = [kept[rid] for rid in sorted(kept)]
    if lamp_holder is not None:
        objects.append(PlacedObject(_object_id(lamp, rng, taken), lamp, lamp_holder.receptacle_id))
    distractor_types = [t for t in _movable_types(scene, constants) if t != target]
    for _ in range(num_distractors if distractor_types else 0):
        kind = rng.choice(distractor_types)
        homes = [r for r in room if _can_hold(r, kind, constants)]
        if homes:
            objects.append(PlacedObject(_object_id(kind, rng, taken), kind, rng.choice(homes).receptacle_id))
    occupied = {grid_location(r.pose) for r in room}
    start = (round(sum(r.pose[0] for r in room) / len(room) / 0.25), round(sum(r.pose[1] for r in room) / len(room) / 0.25), 0, 30)
    while start in occupied:
        start = (start[0] + 1, *start[1:])
    goal = goal_text(task_type, target, goal_type, lamp, rng.randrange(2))
    return GameSpec(task_type, scene.number, target, goal_type, lamp, goal, tuple(room), tuple(objects), start)
