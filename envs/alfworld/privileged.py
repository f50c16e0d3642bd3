"""Privileged context for the teacher: skill text per task type (``skills/*.md``) or a per-task hint (the planner's
walkthrough, numbered by step), correct (``hint_text``) or plausible but wrong (``wrong_hint_text``, for the tasks
``hint_reliability`` makes unreliable)."""

from __future__ import annotations

import functools
import json
import re
import zlib
from collections import Counter
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


def wrong_hint_text(walkthrough: tuple[str, ...] | list[str], gamefile: str, goal: str) -> str:
    """A plausible but wrong hint (``hint_reliability``), in ``hint_text``'s lines: the walkthrough with the goal's
    receptacle (the last step's ``move ... to`` target, and the last ``go to`` target that reaches it; for
    look_at the lamp's place) swapped, from its first visit with the object in hand, for another receptacle of the
    room of another type: the object never reaches a receptacle the goal accepts, the lamp is used where there is
    none. Preferred: a receptacle the walkthrough never names that can hold the object; an ``open`` step follows
    its visit when it opens. Without another receptacle the last step is left out. Deterministic: the choice among
    equals is a hash of the goal and the walkthrough."""
    steps = list(walkthrough)
    visits = [i for i, step in enumerate(steps) if step.startswith("go to ")]
    if not visits:
        return hint_text(steps[:-1])
    arrival = steps[visits[-1]][len("go to "):]
    placed = re.fullmatch(r"move \S+ \d+ to (.+)", steps[-1])
    swapped = {arrival, placed.group(1) if placed else arrival}
    taken = next((i for i, step in enumerate(steps) if step.startswith("take ")), len(steps))
    first = next((i for i in visits if i > taken and steps[i] == steps[visits[-1]]), visits[-1])
    held = steps[taken].split()[1] if taken < len(steps) else ""
    kinds = {name.rsplit(" ", 1)[0] for name in swapped}
    tiers: dict[tuple[bool, bool], list[tuple[str, bool]]] = {}
    for name, opens, holds in room_receptacles(gamefile):
        if name.rsplit(" ", 1)[0] not in kinds:
            named = any(_names(step, name) for step in steps)
            tiers.setdefault((named, held not in holds), []).append((name, opens))
    if not tiers:
        return hint_text(steps[:-1])
    choices = tiers[min(tiers)]
    wrong, opens = choices[zlib.crc32(f"alfworld-wrong-hint:{goal}:{steps}".encode()) % len(choices)]
    rewritten = steps[:first]
    for step in steps[first:]:
        if step.startswith("go to ") and step[len("go to "):] in swapped:
            rewritten.append(f"go to {wrong}")
            if opens and f"open {wrong}" not in rewritten:
                rewritten.append(f"open {wrong}")
        elif not (step.startswith("open ") and step[len("open "):] in swapped):
            for name in swapped:
                step = re.sub(rf"(?<= ){re.escape(name)}$", wrong, step)
            rewritten.append(step)
    return hint_text(rewritten)


def _names(step: str, receptacle: str) -> bool:
    """Whether a command names ``receptacle`` (``cabinet 1`` is not named by ``go to cabinet 10``)."""
    return re.search(rf"(^| ){re.escape(receptacle)}( |$)", step) is not None


@functools.lru_cache(maxsize=4096)
def room_receptacles(gamefile: str) -> tuple[tuple[str, bool, frozenset[str]], ...]:
    """The receptacles of a game as commands name them (``cabinet 3``), whether each opens, and the object types
    (lower-cased, e.g. ``mug``) its type can hold; read from the game file's PDDL problem and named as ALFWorld's
    ``Demangler`` does (the id's type prefix, ``basin`` appended for basins, numbered 1..n per name). Empty when the
    file cannot be read."""
    try:
        problem = json.loads(Path(gamefile).read_text())["pddl_problem"]
    except (OSError, ValueError, KeyError, TypeError):
        return ()
    ids = sorted(set(re.findall(r"^\s*(\w+) - receptacle\s*$", problem, re.MULTILINE)))
    types = dict(re.findall(r"\(receptacleType (\S+) (\S+)Type\)", problem))
    openable = set(re.findall(r"\(openable (\S+)\)", problem))
    holds: dict[str, set[str]] = {}
    for receptacle_type, object_type in re.findall(r"\(canContain (\S+)Type (\S+)Type\)", problem):
        holds.setdefault(receptacle_type, set()).add(object_type.lower())
    counts: Counter[str] = Counter()
    found = []
    for rid in ids:
        lowered = rid.lower()
        name = lowered.split("_bar_", 1)[0] + ("basin" if "basin" in lowered else "")
        counts[name] += 1
        found.append((name, rid in openable, frozenset(holds.get(types.get(rid, ""), ()))))
    opens = {name: any(o for n, o, _ in found if n == name) for name in counts}
    kinds = {name: frozenset().union(*(h for n, _, h in found if n == name)) for name in counts}
    return tuple((f"{name} {i}", opens[name], kinds[name])
                 for name in sorted(counts) for i in range(1, counts[name] + 1))
