"""What a craft_pl checkpoint holds beyond Lightning's own (loops, optimizer, scheduler, datamodule state).

- The policy's weights that training changed: the LoRA adapters (``policy`` and, when kept, ``teacher``) under LoRA,
  the trained model under full fine-tuning. The base (warm-started) weights are rebuilt by ``configure_model``: the
  warm start is a pure function of its settings and seed (cached on disk, bit-identical when recomputed).
- The global RNG states of torch, python and numpy (the named generators of sampling, shuffling and tasks are in the
  datamodule's state).
- The run's configuration, so that a resume with settings that change results is refused, and ``export`` can rebuild
  the policy from the checkpoint alone.
- A digest (sha256) of every tensor and value it restores (``craft_digest``), verified when the checkpoint is loaded.

Checkpoints are read with ``torch.load(weights_only=True)`` only (``load_checkpoint``): a checkpoint holds tensors and
plain Python values, so a file that needs any other type is refused before anything in it runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import pickle
import random
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

log = logging.getLogger(__name__)

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
    "data.env_step_timeout_s",
    "data.env_workers",
    "data.env.init_args.retrieval_total_timeout_s",
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


MAX_CONFIG_DEPTH = 64
"""Deepest nesting of a run configuration that is compared (craft_pl's own are under 10 deep)."""


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``; lists and other values are leaves. Walks without recursion; nesting
    deeper than ``MAX_CONFIG_DEPTH`` raises ``ValueError`` (a stored configuration is data from a file)."""
    flat: dict[str, Any] = {}
    stack = [(prefix, tree, 0)]
    while stack:
        path, value, depth = stack.pop()
        if not isinstance(value, dict):
            flat[path] = value
            continue
        if depth >= MAX_CONFIG_DEPTH:
            raise ValueError(f"the configuration nests deeper than {MAX_CONFIG_DEPTH} levels at {path[:80]}")
        stack.extend((f"{path}.{key}" if path else str(key), child, depth + 1)
                     for key, child in reversed(list(value.items())))
    return flat


def _is_safe(key: str) -> bool:
    return any(key == safe or key.startswith(safe + ".") for safe in RESUME_SAFE_KEYS)


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two configurations, ignoring the resume-safe ones."""
    old, new = flatten(saved), flatten(current)
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in keys
            if not _is_safe(k) and old.get(k, "<unset>") != new.get(k, "<unset>")]


# ---------------------------------------------------------------------------------------------- integrity and loading
DIGEST_KEY = "craft_digest"
UNDIGESTED_KEYS = frozenset({"epoch", "global_step", "pytorch-lightning_version", "legacy_pytorch-lightning_version",
                             "loops", "callbacks", "hparams_name", "hyper_parameters", "hparams_type", DIGEST_KEY})
"""Top-level keys a digest leaves out: Lightning's bookkeeping (which its own migrations may rewrite on load)."""
PRIMITIVES = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, unsafe or corrupt; the message is one line naming the file."""


def _leaves(tree: Any, path: str) -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` for every leaf of nested dicts, lists and tuples (lists and tuples alike, in order)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{path}[{key!r}]")
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from _leaves(value, f"{path}[{index}]")
    else:
        yield path, tree


def _tensor_digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f"{data.dtype}{tuple(tensor.shape)}|".encode())
    digest.update(data.view(torch.uint8).numpy() if data.numel() else b"")
    return digest.hexdigest()[:32]


def tree_digests(tree: dict[str, Any]) -> dict[str, str]:
    """A sha256 (128 bits, hex) per tensor of ``tree``, keyed by its path (``state_dict['...']``), and one per
    top-level key over its other values (``"<key> values"``). Tensors that are not plain (sharded ``DTensor``,
    quantized) are left out."""
    digests: dict[str, str] = {}
    for key, section in tree.items():
        values = hashlib.sha256()
        for path, leaf in _leaves(section, str(key)):
            if type(leaf) in (torch.Tensor, torch.nn.Parameter) and not leaf.is_meta:
                digests[path] = _tensor_digest(leaf)
            elif isinstance(leaf, PRIMITIVES):
                values.update(f"{path}={type(leaf).__name__}:{leaf!r};".encode())
        digests[f"{key} values"] = values.hexdigest()[:32]
    return digests


def checkpoint_digest(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What ``on_save_checkpoint`` stores under ``DIGEST_KEY``: the digests of the restored sections."""
    sections = sorted(str(key) for key in checkpoint if key not in UNDIGESTED_KEYS)
    return {"algorithm": "sha256", "sections": sections,
            "digests": tree_digests({key: checkpoint[key] for key in sections})}


def _listing(paths: list[str]) -> str:
    return ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def digest_differences(stored: dict[str, str], current: dict[str, str]) -> str:
    """What differs between two ``tree_digests``, in words (empty when nothing does)."""
    changed = [path for path in stored if path in current and stored[path] != current[path]]
    missing = [path for path in stored if path not in current]
    unexpected = [path for path in current if path not in stored]
    parts = [f"{len(changed)} of {len(stored)} entries do not match their sha256 digest: {_listing(changed)}"
             if changed else "",
             f"missing {_listing(missing)}" if missing else "",
             f"not covered by the digest: {_listing(unexpected)}" if unexpected else ""]
    return "; ".join(part for part in parts if part)


MAX_CANDIDATES = 3
"""How many other checkpoints ``previous_checkpoint`` reads (each is read whole) before it gives up."""


def previous_checkpoint(path: str | Path) -> Path | None:
    """The newest other ``.ckpt`` in the folder of ``path`` that reads and matches its digest, preferring those
    written before it (at most ``MAX_CANDIDATES`` are read); None when none does."""
    path = Path(path)
    if not path.parent.is_dir():
        return None
    others = sorted((p for p in path.parent.glob("*.ckpt") if p.name != path.name and p.is_file()),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    mtime = path.stat().st_mtime if path.exists() else float("inf")
    ordered = [p for p in others if p.stat().st_mtime <= mtime] + [p for p in others if p.stat().st_mtime > mtime]
    return next((p for p in ordered[:MAX_CANDIDATES] if verifies(p)), None)


def verifies(path: Path) -> bool:
    """Whether ``path`` reads with ``weights_only=True`` and matches its digest (a file without one does not)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        record = checkpoint.get(DIGEST_KEY) if isinstance(checkpoint, dict) else None
        if not isinstance(record, dict) or not isinstance(record.get("digests"), dict):
            return False
        sections = [key for key in record.get("sections") or [] if key in checkpoint]
        return len(sections) == len(record.get("sections") or []) and not digest_differences(
            record["digests"], tree_digests({key: checkpoint[key] for key in sections}))
    except Exception:  # noqa: BLE001 - unreadable in any way: not a checkpoint to suggest
        return False


def corrupt(path: str | Path, what: str) -> CheckpointError:
    """The error for a corrupt checkpoint: the file, what differs, and which checkpoint to use instead (only one
    that reads and matches its digest is named)."""
    previous = previous_checkpoint(path)
    fix = (f"use the previous checkpoint in its folder instead: {previous}" if previous else
           "no other checkpoint in its folder verifies: restore the file from a copy, or train again")
    return CheckpointError(f"checkpoint {path} is corrupt: {what}; {fix}")


def names_a_real_global(name: str) -> bool:
    """Whether ``module.attribute`` names something that exists, found without importing anything: what a crafted
    pickle names (``os.system``), unlike the truncated or garbled names random damage produces."""
    module, _, attribute = name.rpartition(".")
    if not module or not all(part.isidentifier() for part in name.split(".")):
        return False
    if module in sys.modules:
        return attribute in vars(sys.modules[module])
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top) if top not in sys.modules else sys.modules[top].__spec__
    except (ImportError, ValueError):
        return False
    locations = list(getattr(spec, "submodule_search_locations", None) or []) if spec else []
    for part in rest:  # walk the package folders: importing a package to look inside it would run its code
        found = [Path(folder) / part for folder in locations if (Path(folder) / part).is_dir()]
        if not found and not any(Path(folder, f"{part}.py").is_file() or list(Path(folder).glob(f"{part}.*.so"))
                                 for folder in locations):
            return False
        locations = found
    return spec is not None


def verify_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Check the checkpoint's tensors and values against its digest; one without a digest (written by craft_pl
    before checkpoints carried one) is loaded with a warning.

    Raises:
        CheckpointError: ``checkpoint PATH is corrupt: <what differs>; <what to use instead>``.
    """
    record = checkpoint.get(DIGEST_KEY)
    if record is None:
        log.warning("checkpoint %s has no integrity digest (written by an older craft_pl): it is loaded unverified",
                    path)
        return
    if not isinstance(record, dict) or not isinstance(record.get("digests"), dict):
        raise corrupt(path, f"its {DIGEST_KEY} entry is unreadable")
    sections = record.get("sections") or []
    missing = [key for key in sections if key not in checkpoint]
    if missing:
        raise corrupt(path, f"sections {missing} are missing")
    differences = digest_differences(record["digests"], tree_digests({key: checkpoint[key] for key in sections}))
    if differences:
        raise corrupt(path, differences)


def error_summary(error: BaseException) -> str:
    """``Type: first sentence`` of an exception's message (torch's run to paragraphs)."""
    text = (str(error).strip().splitlines() or [""])[0].split(". ")[0]
    return f"{type(error).__name__}: {text[:200]}"


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path``, read with ``weights_only=True`` onto the CPU and verified against its digest.

    Raises:
        CheckpointError: the file is missing, holds objects that are not checkpoint data (a crafted file: nothing in
            it ran), cannot be read (truncated, damaged) or does not match its digest.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path} (no such file); pass --ckpt_path the path of a .ckpt file "
                              "written by `python -m craft_pl fit` (in <trainer.default_root_dir>/**/checkpoints/)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if "weights only" not in str(error).lower() or not (found and names_a_real_global(found.group(1))):
            raise corrupt(path, f"it cannot be unpickled, it is damaged ({error_summary(error)})") from None
        raise CheckpointError(
            f"checkpoint {path} was refused: it holds a Python object that is not checkpoint data "
            f"({found.group(1)}) and could run code when loaded; nothing in it "
            "ran. Load only checkpoints written by `python -m craft_pl fit`") from None
    except Exception as error:  # truncated or damaged archive: torch names no file
        raise corrupt(path, f"it cannot be read, it is truncated or damaged ({error_summary(error)})") from None
    if not isinstance(checkpoint, dict):
        raise corrupt(path, f"it holds a {type(checkpoint).__name__}, not a checkpoint dictionary")
    try:
        verify_checkpoint(checkpoint, path)
    except RecursionError:  # craft_pl computes the digest with the same walk: it never writes such nesting
        raise CheckpointError(f"checkpoint {path} was refused: its values nest deeper than its digest can be checked "
                              "(not a checkpoint written by craft_pl); nothing in it ran") from None
    return checkpoint
