"""Checks the CLI runs after building the objects and before any model loads, so that a configuration that cannot
run ends in one ``error:`` line naming the setting and the fix instead of a traceback minutes later.

Each check returns the problem in words (None when there is none).
"""

from __future__ import annotations

import os
from pathlib import Path

from craft_pl.checkpointing import error_summary

TRUE_WORDS = {"1", "on", "yes", "true"}


def trainer_problem(error: Exception) -> str:
    """One line for a ``MisconfigurationException`` Lightning raises while building the Trainer."""
    text = " ".join(str(error).split())
    if "gpu" in text.lower() or "cuda" in text.lower() or "accelerator" in text.lower():
        return (f"trainer.accelerator: {text[:200]}; this machine has no such accelerator: use "
                "--trainer.accelerator=cpu (or auto), or run on a machine with one")
    return f"trainer: {text[:200]}; fix the trainer setting it names"


def hub_is_offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in TRUE_WORDS
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def offline_model_problem(policy) -> str | None:
    """A hub model name that cannot load: the hub is offline (``HF_HUB_OFFLINE=1`` or ``policy.local_files_only``)
    and the model is not in the local cache."""
    name = getattr(policy, "model_name", None)
    if not isinstance(name, str) or name.startswith("builtin:") or Path(name).exists():
        return None
    offline = hub_is_offline() or bool(getattr(policy, "local_files_only", False))
    if not offline:
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a valid repository id: neither a folder nor a hub name
        return (f"model.policy.model={name!r} is neither a local folder nor a Hugging Face model name; pass a "
                "folder that exists or a hub name (org/model)")
    if isinstance(cached, str):
        return None
    why = "HF_HUB_OFFLINE is set" if hub_is_offline() else "model.policy.local_files_only is true"
    return (f"model.policy.model={name!r} is not in the local Hugging Face cache and the hub cannot be reached "
            f"({why}); download it once online (`huggingface-cli download {name}`), pass a local folder, or "
            "allow downloads")


def uses_privileged_context(model, datamodule) -> bool:
    """Whether this run asks its environment for privileged context (teacher, privileged demonstrations or the
    privileged validation)."""
    objective = getattr(getattr(model, "loss_recipe", None), "objective", None) or getattr(model, "objective", None)
    distills = bool(getattr(objective, "use_distill", False))
    policy = getattr(model, "policy", None)
    demos = float(getattr(policy, "privileged_demo_fraction", 0.0) or 0.0) > 0
    return distills or demos or bool(getattr(datamodule, "val_privileged", False))


def privileged_context_problem(model, datamodule) -> str | None:
    """Ask the environment for one train task's privileged context now, when the run will ask for it: an environment
    whose privileged context raises fails here, in one line, not inside the warm start."""
    env = getattr(datamodule, "environment", None)
    if env is None or not getattr(env, "has_privileged_context", False) or not uses_privileged_context(model,
                                                                                                        datamodule):
        return None
    name = type(env).__name__
    try:
        task = env.task_panel("train", 1, getattr(datamodule, "panel_seed", 0))[0]
        context = env.true_privileged_context(task)
    except Exception as error:  # noqa: BLE001 - any failure of user code is reported, in one line
        return (f"data.env {name}: privileged_context raised {error_summary(error)}; fix the environment's "
                "privileged context, or use a method without a teacher (configs/method/grpo.yaml) with "
                "--data.val_privileged=false")
    if not isinstance(context, str):
        return (f"data.env {name}: privileged_context returned a {type(context).__name__}, not text; make it "
                "return a str")
    return None
