"""Privileged context for the teacher: skill text per task type (``skills/*.md``) or a per-task hint (the planner's
walkthrough, numbered by step)."""

from __future__ import annotations

from pathlib import Path

from craft_pl.envs.alfworld.tasks import TASK_TYPES
from craft_pl.envs.skills import general_and_specific

SKILL_DIR = Path(__file__).resolve().parent / "skills"
PRIVILEGED_MODES = ("skill", "hint")


def skill_text(task_type: str) -> str:
    """General ALFWorld skills followed by the skills of ``task_type``."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown ALFWorld task type {task_type!r}; expected one of {list(TASK_TYPES)}")
    return general_and_specific(SKILL_DIR, task_type)


def hint_text(walkthrough: tuple[str, ...] | list[str]) -> str:
    """The planner's solution, one numbered line per step (the compact prompt numbers its steps the same way)."""
    if not walkthrough:
        return "Hint: no stored solution for this game.\n"
    return "Hint:\n" + "".join(f"step {i} -> {action}\n" for i, action in enumerate(walkthrough, 1))
