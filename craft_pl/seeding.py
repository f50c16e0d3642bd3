"""Randomness by name: one seeded generator per purpose, never the global RNG.

Each purpose (``tasks``, ``rollout``, ``shuffle``, ``warm_start``, ``evaluation``, ``callbacks``) gets its own
``torch.Generator`` and ``random.Random`` derived from the run seed and the purpose's name, so adding a consumer of
one stream never shifts another. States are saved in checkpoints.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

import torch

PURPOSES = ("tasks", "rollout", "shuffle", "warm_start", "evaluation", "callbacks")


def derive_seed(seed: int, name: str) -> int:
    """A 63-bit seed that is a pure function of ``(seed, name)``."""
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def run_seed() -> int:
    """The seed chosen by ``seed_everything`` (LightningCLI sets it), or 0 when none was set."""
    return int(os.environ.get("PL_GLOBAL_SEED", "0"))


class NamedGenerators:
    """A ``torch.Generator`` and a ``random.Random`` per purpose, all derived from one seed."""

    def __init__(self, seed: int, purposes: tuple[str, ...] = PURPOSES) -> None:
        self.seed = int(seed)
        self.torch: dict[str, torch.Generator] = {}
        self.python: dict[str, random.Random] = {}
        for name in purposes:
            self.torch[name] = torch.Generator().manual_seed(derive_seed(self.seed, name))
            self.python[name] = random.Random(derive_seed(self.seed, name + "/python"))

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "torch": {name: gen.get_state() for name, gen in self.torch.items()},
            "python": {name: rng.getstate() for name, rng in self.python.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        for name, value in state["torch"].items():
            self.torch.setdefault(name, torch.Generator()).set_state(value)
        for name, value in state["python"].items():
            self.python.setdefault(name, random.Random()).setstate(value)


def restore_generator(state: torch.Tensor | None) -> torch.Generator | None:
    """A ``torch.Generator`` in the saved ``state`` (``None`` stays ``None``), for checkpointed private streams."""
    if state is None:
        return None
    generator = torch.Generator()
    generator.set_state(state)
    return generator
