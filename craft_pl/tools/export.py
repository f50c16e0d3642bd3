"""``python -m craft_pl export --ckpt_path RUN.ckpt --output_dir DIR [--merged]``: the trained policy in Hugging Face
format, loadable with plain ``transformers`` / ``peft`` (no craft_pl import).

The checkpoint holds its run's configuration, so the policy is rebuilt exactly as training built it (tokenizer,
warm-started base from the warm-start cache or recomputed bit-identically), then the checkpoint's weights are loaded.
Written under ``DIR``:

- LoRA: ``adapter/`` (the ``policy`` peft adapter and the tokenizer); ``base/`` (base weights and tokenizer) when
  the base is not a hub checkpoint as-is (the built-in tiny model, or any warm-started model); with ``--merged``,
  ``merged/`` (adapter folded into the base).
- Full fine-tuning: ``model/`` (the trained model and the tokenizer).
- ``export.json``: what was written and how to load it.

A checkpoint is data. Its stored configuration may name only craft_pl's own classes (a ``class_path`` elsewhere would
be imported, running its module's code): pass ``--config`` with the run's files, or ``--trust_config_classes`` for a
checkpoint whose source you trust. The configuration's model and warm start are bounded before anything is
allocated, its ``trainer`` section is ignored (the policy is rebuilt on the CPU), weights must be finite and fit the
rebuilt policy, and export never trains: the warm-started base comes from the warm-start cache, or
``--recompute_warm_start`` recomputes it (never cached). The checkpoint's digest proves it is intact, not who wrote it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from craft_pl.storage.atomic import atomic_write
from craft_pl.checkpointing import complete_state_dict, load_checkpoint
from craft_pl.model.warm_start import cache_only


MAX_CONFIG_DEPTH = 64
"""Deepest nesting accepted in a stored configuration (craft_pl's own are under 10 deep)."""
MAX_TINY_PARAMETERS = 2_000_000_000
"""Largest built-in model a stored configuration may ask for (checked before anything is allocated)."""
MAX_DEMONSTRATIONS = 200_000
"""Most warm-start demonstrations a stored configuration may ask for (export collects them to find the cache)."""
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


def _walk(config: Any):
    """``(path, key, value)`` of every entry of nested dicts and lists, without recursion, refusing deep nesting."""
    stack = [("", config, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise ValueError(f"it nests deeper than {MAX_CONFIG_DEPTH} levels at {path[:80]}...")
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in items:
            child_path = f"{path}.{key}" if path else str(key)
            yield child_path, key, child
            stack.append((child_path, child, depth + 1))


def foreign_classes(config: dict) -> list[tuple[str, str]]:
    """``(config key, name)`` of every class or import path the configuration names outside ``craft_pl`` (a
    ``class_path``, or a dotted name given as a class shorthand): what rebuilding it would import, and run."""
    found = []
    for path, key, value in _walk(config):
        if isinstance(value, str) and _DOTTED.fullmatch(value) and (key == "class_path" or "." in value):
            if not value.startswith("craft_pl.") and not _harmless(path, value):
                found.append((path, value))
    return found


_DATA_KEYS = ("model", "model_name", "url")
_DATA_SUFFIXES = ("_file", "_files", "_dir", "_path", "_url")
_DATA_EXTENSIONS = (".jsonl", ".json", ".parquet", ".yaml", ".yml", ".txt", ".csv", ".pt", ".ckpt", ".md")


def _harmless(path: str, value: str) -> bool:
    """Dotted strings that are data, not imports: model names, file names and paths."""
    keys = [part for part in path.split(".") if not part.isdigit()]
    last = keys[-1] if keys else ""
    if last == "class_path":
        return False
    return (last in _DATA_KEYS or any(key.endswith(_DATA_SUFFIXES) for key in keys)
            or value.lower().endswith(_DATA_EXTENSIONS))


def tiny_parameters(spec: dict) -> int:
    """Parameters of the built-in model a ``tiny`` spec asks for (embeddings, attention, MLP per layer)."""
    values = {name: spec.get(name, default) for name, default in
              (("vocab_size", 1024), ("hidden_size", 128), ("num_layers", 2), ("intermediate_size", 384))}
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"model.policy.init_args.tiny.{name} is {value!r}, not a positive int")
    hidden = values["hidden_size"]
    return (2 * values["vocab_size"] * hidden + values["num_layers"] * (4 * hidden * hidden
                                                                         + 3 * hidden * values["intermediate_size"]))


def check_stored_config(config: Any, ckpt_path, trust_classes: bool) -> dict:
    """The checkpoint's stored configuration as one fit to rebuild from, or ``ValueError`` naming what is wrong.

    A checkpoint is data: its configuration may name only craft_pl's own classes unless ``trust_classes``; the model
    and the warm start it asks for are bounded before anything is allocated; its ``trainer`` section is dropped (the
    policy is rebuilt on this machine's CPU)."""
    fix = "pass --config with the run's configuration files instead"
    if not isinstance(config, dict) or not config:
        raise ValueError(f"{ckpt_path} holds no craft_pl run configuration (found {type(config).__name__}); {fix}")
    try:
        foreign = foreign_classes(config)
    except ValueError as error:
        raise ValueError(f"{ckpt_path}: its stored configuration is malformed: {error}; {fix}") from None
    if foreign and not trust_classes:
        where, name = foreign[0]
        raise ValueError(f"{ckpt_path}: its stored configuration names {name} ({where}), outside craft_pl; "
                         f"rebuilding would import it and run its code, so {fix}, or pass --trust_config_classes "
                         "if you trust where this checkpoint came from")
    config = {key: value for key, value in config.items() if key not in ("ckpt_path", "weights_only", "trainer")}
    policy = ((config.get("model") or {}).get("policy") or {}) if isinstance(config.get("model"), dict) else {}
    arguments = policy.get("init_args", policy) if isinstance(policy, dict) else {}
    arguments = arguments if isinstance(arguments, dict) else {}
    model = arguments.get("model", "builtin:tiny")
    tiny = arguments.get("tiny") or {}
    if model == "builtin:tiny" and isinstance(tiny, dict):
        try:
            count = tiny_parameters(tiny)
        except ValueError as error:
            raise ValueError(f"{ckpt_path}: {error}; {fix}") from None
        if count > MAX_TINY_PARAMETERS:
            raise ValueError(f"{ckpt_path}: its stored configuration asks for a built-in model of {count:.3g} "
                             f"parameters (over {MAX_TINY_PARAMETERS:.0e}); {fix}")
    warm = arguments.get("warm_start")
    demos = warm.get("num_demos", 0) if isinstance(warm, dict) else 0
    if not isinstance(demos, int) or demos > MAX_DEMONSTRATIONS:
        raise ValueError(f"{ckpt_path}: its stored configuration asks for {demos!r} warm-start demonstrations (at "
                         f"most {MAX_DEMONSTRATIONS}); {fix}")
    return config


def check_weights(state: Any, ckpt_path) -> None:
    """Every stored weight is a finite tensor (``ValueError`` naming the first that is not)."""
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{ckpt_path} holds no trained weights (state_dict)")
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{ckpt_path}: state_dict[{key!r}] is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{ckpt_path}: state_dict[{key!r}] holds NaN or infinite values; export refuses "
                             "non-finite weights: use an earlier checkpoint of the run")


def _build(arguments: list[str], ckpt_path, from_files: bool):
    """The CLI's objects for ``arguments`` (not run); a configuration the CLI refuses becomes one ``ValueError``
    carrying the CLI's own ``error:`` line (usage text dropped)."""
    from craft_pl.cli import main

    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return main(arguments, run=False)
    except SystemExit as stop:
        if stop.code not in (2, None):  # Ctrl-C or SIGTERM while building: a stop, not a bad configuration
            raise
        lines = [line for line in captured.getvalue().splitlines() if line.startswith("error:")]
        reason = " ".join(lines[0].split()[1:]) if lines else captured.getvalue().strip()[-300:]
        source = "the given --config files" if from_files else f"{ckpt_path}'s stored configuration"
        raise ValueError(f"{source} cannot be rebuilt: {reason}") from None
    finally:
        sys.stderr.write("".join(line + "\n" for line in captured.getvalue().splitlines()
                                 if not line.startswith(("error:", "usage:", "tip:", "  "))))


def rebuild_module(ckpt_path: str | Path, configs: list[str] | None = None, trust_classes: bool = False,
                   recompute_warm_start: bool = False):
    """The ``CraftModule`` of a checkpoint with its trained weights loaded (built on CPU, eval mode).

    The checkpoint is read with ``weights_only=True`` and verified against its digest, its weights checked finite and
    its stored configuration checked (``check_stored_config``) before anything is built; ``configs`` (the user's own
    files) replace the stored configuration. The warm-started base comes from the warm-start cache only: export
    never trains unless ``recompute_warm_start``.

    Raises:
        CheckpointError: the file is missing, unsafe or corrupt (one line naming it).
        ValueError: its configuration or weights cannot be rebuilt from (one line naming what and the fix).
    """
    checkpoint = load_checkpoint(ckpt_path)
    check_weights(checkpoint.get("state_dict"), ckpt_path)
    with tempfile.TemporaryDirectory() as tmp:
        if configs:
            arguments = [argument for path in configs for argument in ("--config", str(path))]
        else:
            config = check_stored_config(checkpoint.get("craft_config"), ckpt_path, trust_classes)
            config_path = Path(tmp) / "config.yaml"
            try:
                config_path.write_text(yaml.safe_dump(config))
            except yaml.YAMLError as error:
                raise ValueError(f"{ckpt_path}: its stored configuration holds values that are not plain data "
                                 f"({str(error).splitlines()[0][:120]}); pass --config with the run's configuration "
                                 "files instead") from None
            arguments = ["--config", str(config_path)]
        cli = _build([*arguments, f"--trainer.default_root_dir={tmp}", "--trainer.accelerator=cpu",
                      "--trainer.devices=1", "--trainer.strategy=auto"], ckpt_path, bool(configs))
        module = cli.model
        with cache_only(recompute=recompute_warm_start):
            module.build_policy(module.data_facts)  # the CLI connected the module to its data side
    current = module.state_dict()
    state = complete_state_dict(checkpoint["state_dict"], current, module.policy.finetune)
    mismatched = [key for key, value in state.items() if tuple(value.shape) != tuple(current[key].shape)]
    if mismatched:
        key = mismatched[0]
        raise ValueError(f"{ckpt_path}: state_dict[{key!r}] has shape {tuple(state[key].shape)} but the rebuilt policy "
                         f"has {tuple(current[key].shape)} ({len(mismatched)} such); rebuild with the configuration "
                         "the checkpoint was trained with")
    module.load_state_dict(state)
    return module.eval()


def export_policy(ckpt_path: str | Path, output_dir: str | Path, merged: bool = False, configs: list[str] | None = None,
                  trust_classes: bool = False, recompute_warm_start: bool = False) -> dict:
    """Write the checkpoint's policy under ``output_dir``; returns the ``export.json`` record."""
    module = rebuild_module(ckpt_path, configs, trust_classes, recompute_warm_start)
    policy = module.policy
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    if policy.finetune == "full":
        policy.model.save_pretrained(out / "model")
        policy.tokenizer.save_pretrained(out / "model")
        written["model"] = "model"
    else:
        peft_model = policy.model
        with tempfile.TemporaryDirectory() as tmp:
            peft_model.save_pretrained(tmp, selected_adapters=["policy"])
            saved = Path(tmp) / "policy" if (Path(tmp) / "policy").is_dir() else Path(tmp)
            target = out / "adapter"
            target.mkdir(exist_ok=True)
            for file in saved.iterdir():
                if file.is_file():
                    (target / file.name).write_bytes(file.read_bytes())
        policy.tokenizer.save_pretrained(out / "adapter")
        written["adapter"] = "adapter"
        if policy.model_name.startswith("builtin:") or policy.warm_start is not None:
            base = copy.deepcopy(peft_model).unload()
            base.save_pretrained(out / "base")
            policy.tokenizer.save_pretrained(out / "base")
            written["base"] = "base"
        if merged:
            folded = copy.deepcopy(peft_model).merge_and_unload(adapter_names=["policy"])
            folded.save_pretrained(out / "merged")
            policy.tokenizer.save_pretrained(out / "merged")
            written["merged"] = "merged"
    base_source = written.get("base", policy.model_name)
    record = {
        "checkpoint": str(ckpt_path),
        "finetune": policy.finetune,
        "written": written,
        "base_model": base_source,
        "load": (
            "AutoModelForCausalLM.from_pretrained(DIR/model)" if policy.finetune == "full" else
            f"PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base_source!r}), DIR/adapter)"
        ),
    }
    atomic_write(out / "export.json", json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m craft_pl export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by `python -m craft_pl fit`")
    parser.add_argument("--output_dir", required=True, help="where to write the Hugging Face folders")
    parser.add_argument("--merged", action="store_true", help="also write the adapter merged into the base")
    parser.add_argument("--config", action="append", default=None,
                        help="rebuild from these configuration files (the run's) instead of the checkpoint's stored "
                             "configuration; may be repeated")
    parser.add_argument("--trust_config_classes", action="store_true",
                        help="allow a stored configuration to name classes outside craft_pl (importing them runs "
                             "their code: only for checkpoints from a source you trust)")
    parser.add_argument("--recompute_warm_start", action="store_true",
                        help="recompute the warm-started base when it is not in the cache (trains; never cached)")
    args = parser.parse_args(argv)
    try:
        record = export_policy(args.ckpt_path, args.output_dir, args.merged, args.config, args.trust_config_classes,
                               args.recompute_warm_start)
    except ValueError as error:  # CheckpointError included: missing, unsafe or corrupt checkpoint
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(record, indent=2))
