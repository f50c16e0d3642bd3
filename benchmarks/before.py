"""Earlier versions of craft_pl to time against, taken from git rather than kept in the library.

``exported_tree(commit, directory)`` writes a whole commit's files (``git archive``) where a subprocess can run
them; ``module_at(commit, path)`` imports one self-contained file as it was at ``commit`` (e.g. the decoding loop
before the shared-prefill engine), so a benchmark can run it side by side with today's code in one process.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent

ENGINE_BEFORE_SHARED_PREFILL = "e092456"
"""The last commit whose ``craft_pl/rollout/engine.py`` prefills every row and decodes every row to the end (the
shared-prefill engine came in 9ef7044); both draw the same random numbers, so their generations agree."""


def exported_tree(commit: str, directory: Path) -> Path:
    """The files of ``commit`` under ``directory``, importable as ``craft_pl`` from there."""
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
    for package in ("envs", "callbacks"):  # the old packaging mapped these top-level folders into craft_pl
        if (directory / package).is_dir() and not (directory / "craft_pl" / package).exists():
            (directory / "craft_pl" / package).symlink_to(directory / package)
    return directory


def module_at(commit: str, path: str) -> ModuleType:
    """The module in file ``path`` as it was at ``commit`` (it may import today's craft_pl, nothing of its own time)."""
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, check=True).stdout
    file = Path(tempfile.mkdtemp(prefix="craft_pl_before_")) / Path(path).name
    file.write_bytes(source)
    name = f"craft_pl_before_{commit}_{Path(path).stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module
