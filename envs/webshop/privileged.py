"""Privileged context for the teacher: skill text per task type (``skills/*.md``) or a per-task hint."""

from __future__ import annotations

from pathlib import Path

from craft_pl.envs.skills import general_and_specific
from craft_pl.envs.webshop.catalog import Catalog
from craft_pl.envs.webshop.goals import Goal
from craft_pl.envs.webshop.vocab import TASK_TYPES

SKILL_DIR = Path(__file__).resolve().parent / "skills"
PRIVILEGED_MODES = ("skill", "hint")


def skill_text(task_type: str) -> str:
    """General skills followed by the skills of ``task_type``."""
    if task_type not in TASK_TYPES:
        raise ValueError(f"unknown WebShop task type {task_type!r}; expected one of {list(TASK_TYPES)}")
    return general_and_specific(SKILL_DIR, task_type)


def hint_text(goal: Goal, catalog: Catalog, id_style: str = "short", results_per_page: int = 10) -> str:
    """The clicks that solve one goal, keyed by the page where each is made (the words the observation starts
    with), so that a small model can look its next action up: which result to open on which results page, then
    the options and ``buy now`` on the item page.

    The result to open follows a ``#`` that appears nowhere else in a prompt: the results page lists ``[1]`` ..
    ``[10]``, so a hint written ``click[3]`` gives the model ten look-alike places to copy from, while ``#3`` gives
    one (a tiny model learned to read ``#3`` hints in its warm start where it ignored ``click[3]`` ones)."""
    index = catalog.by_asin.get((goal.answer_asin or goal.asin).lower(), goal.product_index)
    product = catalog.products[index]
    lines = ["Hint:"]
    name, page = product.asin.lower(), 1
    if id_style == "rank" and goal.answer_rank >= 0:
        page = goal.answer_rank // results_per_page + 1
        lines += [f"results page {p}: click[next >]" for p in range(1, page)]
        name = str(goal.answer_rank % results_per_page + 1)
    lines.append(f"results page {page}: open #{name}")
    item_clicks = [f"click[{value}]" for _, value in goal.goal_options] + ["click[buy now]"]
    lines.append("item page: " + " then ".join(item_clicks))
    return "\n".join(lines) + "\n"
