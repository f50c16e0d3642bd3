"""A sampled room (``GameSpec``) and its PDDL problem for ALFWorld's ``alfred.pddl`` domain.

Names follow ALFRED's problems: THOR ids mangled (``|`` -> ``_bar_``, ...), one ``loc|x|z|rot|hor`` location per
receptacle pose (grid units of 0.25 m), ``<Type>Type`` constants for object and receptacle types, ``canContain``
facts for every receptacle type x object type pair the room has (fast-downward's grounding needs them).
"""

from __future__ import annotations

from dataclasses import dataclass

from craft_pl.envs.alfworld.scenes import Receptacle


DOMAIN_RECEPTACLE_TYPES = ("SinkBasin", "Microwave", "Fridge")
DOMAIN_OBJECT_TYPES = ("Knife", "ButterKnife")
"""Type constants that ``alfred.pddl``'s actions name: declared in every problem, or fast-downward's grounding fails
(``KeyError 'val1'``) as soon as, say, a cleanable object meets a room without a sink."""


@dataclass(frozen=True)
class PlacedObject:
    object_id: str
    """THOR-like id, e.g. ``Apple|+01.00|+00.90|-00.25``."""
    object_type: str
    receptacle_id: str
    """The receptacle it starts in."""


@dataclass(frozen=True)
class GameSpec:
    """Everything that defines one generated game."""

    task_type: str
    scene: int
    target: str
    """Object type the goal is about."""
    goal_receptacle: str
    """Receptacle type of the goal ("" for look_at)."""
    lamp: str
    """Lamp type of a look_at goal ("" otherwise)."""
    goal: str
    """The goal sentence."""
    receptacles: tuple[Receptacle, ...]
    objects: tuple[PlacedObject, ...]
    start: tuple[int, int, int, int]
    """The agent's starting location (grid x, z, rotation index, horizon)."""


def mangle(name: str) -> str:
    """ALFRED's PDDL-safe spelling of a THOR id."""
    for char, word in (("|", "_bar_"), ("-", "_minus_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        name = name.replace(char, word)
    return name


def grid_location(pose: tuple[float, float, int, int]) -> tuple[int, int, int, int]:
    """A pose in metres and degrees -> ALFRED's grid location (0.25 m steps, rotation in quarter turns)."""
    x, z, rotation, horizon = pose
    return round(x / 0.25), round(z / 0.25), round(rotation / 90) % 4, int(horizon)


def location_name(location: tuple[int, int, int, int]) -> str:
    return mangle("loc|%d|%d|%d|%d" % location)


def object_facts(obj: PlacedObject, constants, spec: GameSpec, fridge_ids: set[str]) -> list[str]:
    """``:init`` facts of one object: type, place, and the abilities ALFRED's problems give it."""
    name, kind = mangle(obj.object_id), obj.object_type
    facts = [f"(objectType {name} {kind}Type)", f"(inReceptacle {name} {mangle(obj.receptacle_id)})"]
    if kind == spec.lamp:
        facts.append(f"(toggleable {name})")
        return facts
    facts.append(f"(pickupable {name})")
    for ability, predicate in (("Cleanable", "cleanable"), ("Heatable", "heatable"), ("Coolable", "coolable")):
        if kind in constants.VAL_ACTION_OBJECTS[ability]:
            facts.append(f"({predicate} {name})")
    if obj.receptacle_id in fridge_ids and kind == spec.target:
        facts.append(f"(isCool {name})")  # ALFRED marks objects found in a fridge as already cool
    return facts


def pddl_problem(spec: GameSpec) -> str:
    """The PDDL problem of ``spec`` (goal from ``goal_library``, ``#`` written as ``-`` as ALFRED does)."""
    from alfworld.gen import constants, goal_library

    receptacles = {r.receptacle_id: r for r in spec.receptacles}
    locations = {r.receptacle_id: grid_location(r.pose) for r in spec.receptacles}
    object_types = sorted({o.object_type for o in spec.objects} | {spec.target} | ({spec.lamp} - {""})
                          | set(DOMAIN_OBJECT_TYPES))
    receptacle_types = sorted({r.receptacle_type for r in spec.receptacles} | ({spec.goal_receptacle} - {""})
                              | set(DOMAIN_RECEPTACLE_TYPES))
    all_locations = sorted(set(locations.values()) | {spec.start})
    declarations = (
        ["agent1 - agent"]
        + [f"{t}Type - otype" for t in object_types]
        + [f"{t}Type - rtype" for t in receptacle_types]
        + [f"{mangle(o.object_id)} - object" for o in spec.objects]
        + [f"{mangle(rid)} - receptacle" for rid in sorted(receptacles)]
        + [f"{location_name(loc)} - location" for loc in all_locations]
    )
    fridge_ids = {rid for rid, r in receptacles.items() if r.receptacle_type == "Fridge"}
    init = [f"(atLocation agent1 {location_name(spec.start)})"]
    for rid in sorted(receptacles):
        r = receptacles[rid]
        init += [f"(receptacleType {mangle(rid)} {r.receptacle_type}Type)",
                 f"(receptacleAtLocation {mangle(rid)} {location_name(locations[rid])})"]
        if r.receptacle_type in constants.OPENABLE_CLASS_SET:
            init.append(f"(openable {mangle(rid)})")
    for obj in spec.objects:
        init += object_facts(obj, constants, spec, fridge_ids)
        init.append(f"(objectAtLocation {mangle(obj.object_id)} {location_name(locations[obj.receptacle_id])})")
    for rtype in receptacle_types:
        allowed = constants.VAL_RECEPTACLE_OBJECTS.get(rtype, set())
        init += [f"(canContain {rtype}Type {otype}Type)" for otype in object_types if otype in allowed]
    goal = goal_library.gdict[spec.task_type]["pddl"].format(
        obj=spec.target, recep=spec.goal_receptacle, toggle=spec.lamp, mrecep=""
    ).replace("#", "-")
    lines = ["(define (problem plan_trial)", "    (:domain alfred)", "    (:objects"]
    lines += [f"        {d}" for d in declarations]
    lines += ["    )", "    (:init"]
    lines += [f"        {fact}" for fact in init]
    lines += ["    )", goal.strip("\n")]
    return "\n".join(lines) + "\n"
