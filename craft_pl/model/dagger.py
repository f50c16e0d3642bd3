"""The warm start's second stage, DAgger (Ross et al., 2011): the cloned student plays, the expert labels.

Behaviour cloning shows the student only the states the expert visits; once the student errs it is where no row
has been (an invalid command's ``Nothing happens.``, then the same command again). Here the cloned model plays
``warm_start.student_episodes`` train tasks itself, every state it reaches is labelled with the expert's action,
and cloning goes on for ``warm_start.student_steps`` steps over the expert's rows and these together. The result is
cached like the first stage, under a key over both sets of rows and the first stage's key.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Callable

import torch

from craft_pl.model.warm_start import STUDENT_FIELDS, announce, cache_key, warm_start_weights
from craft_pl.seeding import derive_seed


def clone_on_student_states(policy, base: torch.nn.Module, rows: list[tuple[list[int], list[int]]], first_key: str,
                            description: str, student_demonstrations: Callable[..., list[tuple[str, str]]] | None,
                            seed: int) -> list[float]:
    """Let ``base`` (cloned on ``rows``, the first stage's cache ``first_key``) play, label its states with the
    expert's actions, and clone on both sets of rows; returns the second stage's loss per step."""
    settings = policy.warm_start
    if student_demonstrations is None:
        raise ValueError("warm_start.student_episodes > 0 needs an environment whose expert labels the student's "
                         "states (the data side hands none over here); set warm_start.student_episodes: 0")
    base.eval()
    played = student_demonstrations(settings.student_episodes, base, policy.tokenizer, policy.encode_prompt,
                                    settings.student_temperature, seed)
    student_rows = [(policy.encode_prompt(p), policy.encode_response(r)) for p, r in played]
    announce(f"warm start: the student played {settings.student_episodes} episodes, {len(student_rows)} states "
             "labelled by the expert")
    stage = replace(settings, steps=settings.student_steps)
    student_settings = {name: asdict(settings)[name] for name in STUDENT_FIELDS}
    key = cache_key(stage, f"{description}|after {first_key}|{student_settings}", policy.tokenizer.get_vocab(),
                    rows + student_rows, seed)
    generator = torch.Generator().manual_seed(derive_seed(seed, "warm_start_student"))
    return warm_start_weights(base, rows + student_rows, stage, key, policy.tokenizer.pad_token_id, generator)
