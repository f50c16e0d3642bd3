"""What a craft_pl checkpoint holds beyond Lightning's own (loops, optimizer, scheduler, datamodule state).

- The policy's weights that training changed: the LoRA adapters (``policy`` and, when kept, ``teacher``) under LoRA,
  the trained model under full fine-tuning. The base (warm-started) weights are rebuilt by ``configure_model``: the
  warm start is a pure function of its settings and seed (cached on disk, bit-identical when recomputed).
- The global RNG states of torch, python and numpy (the named generators of sampling, shuffling and tasks are in the
  datamodule's state).
- The run's configuration, so that a resume with settings that change results is refused, and ``export`` can rebuild
  the policy from the checkpoint alone.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

RESUME_SAFE_KEYS = (
    "ckpt_path",
    "config",
    "allow_config_change",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.min_epochs",
    "trainer.min_steps",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.enable_checkpointing",
    "trainer.log_every_n_steps",
    "rollout_metrics",
    "credit_inspector",
)
"""Keys that may differ between a checkpoint and the run resuming it: length, output and progress settings only."""


def is_rebuilt_key(key: str, finetune: str) -> bool:
    """Whether a ``CraftModule.state_dict`` key is rebuilt by ``configure_model`` rather than saved.

    Under LoRA everything but the adapters (``lora_`` parameters of any adapter) is the warm-started base; under full
    fine-tuning the frozen reference copy is the warm-started base.
    """
    if finetune == "lora":
        return "lora_" not in key
    return key.startswith("policy.reference.")


def compact_state_dict(state_dict: dict[str, torch.Tensor], finetune: str) -> dict[str, torch.Tensor]:
    """The part of the module's state dict that a checkpoint stores."""
    return {key: value for key, value in state_dict.items() if not is_rebuilt_key(key, finetune)}


def complete_state_dict(saved: dict[str, torch.Tensor], current: dict[str, torch.Tensor],
                        finetune: str) -> dict[str, torch.Tensor]:
    """``saved`` (a compact state dict) completed with the rebuilt keys of ``current``.

    Raises:
        ValueError: when the checkpoint lacks trained weights this policy has, or holds weights it does not have
            (a checkpoint of another model, adapter rank or fine-tuning mode).
    """
    missing = sorted(k for k in current if not is_rebuilt_key(k, finetune) and k not in saved)
    unexpected = sorted(k for k in saved if k not in current)
    if missing or unexpected:
        raise ValueError(
            "the checkpoint's trained weights do not match this policy "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}); resume with the configuration the "
            "checkpoint was trained with"
        )
    completed = {k: v for k, v in current.items() if is_rebuilt_key(k, finetune)}
    completed.update(saved)
    return completed


def rng_states() -> dict[str, Any]:
    """The global RNG states of torch, python and numpy, as types that ``torch.load(weights_only=True)`` accepts."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)]
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": numpy_state}


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``; lists and other values are leaves."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _is_safe(key: str) -> bool:
    return any(key == safe or key.startswith(safe + ".") for safe in RESUME_SAFE_KEYS)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two configurations, ignoring the resume-safe ones."""
    old, new = flatten(saved), flatten(current)
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in keys
            if not _is_safe(k) and old.get(k, "<unset>") != new.get(k, "<unset>")]
