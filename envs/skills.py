"""Skill texts of the privileged context, read from an environment's ``skills/<name>.md`` files."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def read_skill(directory: Path, name: str) -> str:
    """The text of ``directory/<name>.md``, stripped (read once per process)."""
    return (directory / f"{name}.md").read_text(encoding="utf-8").strip()


def general_and_specific(directory: Path, specific: str | None) -> str:
    """The ``general`` skills followed by those of ``specific`` (general alone when ``specific`` is ``None``)."""
    general = read_skill(directory, "general")
    return f"{general}\n\n{read_skill(directory, specific)}\n" if specific else f"{general}\n"
