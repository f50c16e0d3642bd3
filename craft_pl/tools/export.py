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
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import yaml

from craft_pl.checkpointing import complete_state_dict, load_checkpoint


def rebuild_module(ckpt_path: str | Path):
    """The ``CraftModule`` of a checkpoint with its trained weights loaded (built on CPU, eval mode).

    The checkpoint is read with ``weights_only=True`` and verified against its digest before anything is built.

    Raises:
        CheckpointError: the file is missing, unsafe or corrupt (one line naming it).
        ValueError: it holds no craft_pl run configuration.
    """
    from craft_pl.cli import main

    checkpoint = load_checkpoint(ckpt_path)
    config = checkpoint.get("craft_config")
    if not config:
        raise ValueError(f"{ckpt_path} holds no craft_pl run configuration; was it written by craft_pl's fit?")
    for key in ("ckpt_path", "weights_only"):  # fit's own arguments, in checkpoints of older versions
        config.pop(key, None)
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        cli = main(["--config", str(config_path)], run=False)
    module = cli.model
    module.build_policy(module.data_facts)  # the CLI connected the module to its data side
    state = complete_state_dict(checkpoint["state_dict"], module.state_dict(), module.policy.finetune)
    module.load_state_dict(state)
    return module.eval()


def export_policy(ckpt_path: str | Path, output_dir: str | Path, merged: bool = False) -> dict:
    """Write the checkpoint's policy under ``output_dir``; returns the ``export.json`` record."""
    module = rebuild_module(ckpt_path)
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
    (out / "export.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m craft_pl export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by `python -m craft_pl fit`")
    parser.add_argument("--output_dir", required=True, help="where to write the Hugging Face folders")
    parser.add_argument("--merged", action="store_true", help="also write the adapter merged into the base")
    args = parser.parse_args(argv)
    try:
        record = export_policy(args.ckpt_path, args.output_dir, args.merged)
    except ValueError as error:  # CheckpointError included: missing, unsafe or corrupt checkpoint
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(record, indent=2))
