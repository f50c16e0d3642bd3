"""ALFWorld's six task types: their names, what each needs in a room, and the goal sentence shown to the agent."""

from __future__ import annotations

from dataclasses import dataclass

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
"""ALFWorld's task-type names (``alfred_tw_env.TASK_TYPES`` 1-6), used for per-type metrics and skills."""

LAMP_TYPES = ("DeskLamp", "FloorLamp")
LAMP_HOLDERS = ("Desk", "SideTable", "Dresser")
"""Receptacle types a lamp is put on (lamps are not in ``VAL_RECEPTACLE_OBJECTS``)."""
APPLIANCES = ("Microwave", "Fridge", "SinkBasin", "BathtubBasin")


@dataclass(frozen=True)
class TaskNeeds:
    """What a task type requires of a room."""

    object_property: str | None
    """``VAL_ACTION_OBJECTS`` key the target object must be in (``Cleanable``, ``Heatable``, ``Coolable``)."""
    appliance: tuple[str, ...]
    """Receptacle types of which the room needs at least one (``alfred.pddl`` cleans only in a SinkBasin, ...)."""
    rooms: tuple[str, ...]
    """Room kinds (``constants.SCENE_TYPE`` keys) where ALFRED poses this task."""
    targets: int = 1
    """Instances of the target object type placed in the room (two for pick_two)."""
    needs_lamp: bool = False
    goal_receptacle: bool = True
    """Whether the goal names a receptacle (look_at names a lamp instead)."""


NEEDS = {
    "pick_and_place_simple": TaskNeeds(None, (), ("Kitchen", "LivingRoom", "Bathroom", "Bedroom")),
    "look_at_obj_in_light": TaskNeeds(None, (), ("LivingRoom", "Bedroom"), needs_lamp=True, goal_receptacle=False),
    "pick_clean_then_place_in_recep": TaskNeeds("Cleanable", ("SinkBasin",), ("Kitchen", "Bathroom")),
    "pick_heat_then_place_in_recep": TaskNeeds("Heatable", ("Microwave",), ("Kitchen",)),
    "pick_cool_then_place_in_recep": TaskNeeds("Coolable", ("Fridge",), ("Kitchen",)),
    "pick_two_obj_and_place": TaskNeeds(None, (), ("Kitchen", "LivingRoom", "Bathroom", "Bedroom"), targets=2),
}


def goal_text(task_type: str, target: str, receptacle: str, lamp: str, template_index: int) -> str:
    """The goal sentence from ``goal_library``'s templates (``template_index`` picks one), lower-cased as ALFWorld's
    ``get_templated_task_desc`` fills it."""
    from alfworld.gen import goal_library

    templates = goal_library.gdict[task_type]["templates"]
    template = templates[template_index % len(templates)]
    return template.format(obj=target.lower(), recep=receptacle.lower(), toggle=lamp.lower(), mrecep="")


def check_task_types(task_types: list[str] | tuple[str, ...]) -> None:
    """Fail with the valid names when a task type is unknown or none is given."""
    unknown = [t for t in task_types if t not in TASK_TYPES]
    if unknown or not task_types:
        raise ValueError(f"unknown or no ALFWorld task types {unknown or list(task_types)}; use some of "
                         f"{list(TASK_TYPES)}")
