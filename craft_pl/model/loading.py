"""Loading a policy's tokenizer and base model: the built-in tiny model (nothing downloaded) or any Hugging Face
causal LM by hub name or local path, optionally quantized to 4-bit NF4 while loading."""

from __future__ import annotations

import torch

from craft_pl.model.quantization import nf4_loading_config
from craft_pl.model.tiny import TinyModelSpec, build_tiny_model, train_tokenizer

BUILTIN_TINY = "builtin:tiny"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(model_name: str, tiny: TinyModelSpec, corpus: list[str], local_files_only: bool):
    """The tokenizer: trained on ``corpus`` for the built-in model, else the hub/local one (pad = EOS if missing)."""
    if model_name == BUILTIN_TINY:
        if not corpus:
            raise ValueError("the built-in tokenizer needs environment text to train on; got an empty corpus")
        return train_tokenizer(corpus, tiny.vocab_size)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name, local_files_only=local_files_only)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_name: str, tiny: TinyModelSpec, tokenizer, dtype: str, init_seed: int, local_files_only: bool,
               nf4_compute_dtype: str | None, double_quant: bool, device: torch.device) -> torch.nn.Module:
    """The base model in ``dtype``; a hub model with ``nf4_compute_dtype`` set is quantized while loading (never
    materialised in full) straight onto ``device``."""
    if model_name == BUILTIN_TINY:
        return build_tiny_model(tiny, tokenizer, init_seed).to(DTYPES[dtype])
    from transformers import AutoModelForCausalLM

    if nf4_compute_dtype is not None:
        return AutoModelForCausalLM.from_pretrained(
            model_name, dtype=DTYPES[dtype], local_files_only=local_files_only,
            quantization_config=nf4_loading_config(DTYPES[nf4_compute_dtype], double_quant),
            device_map={"": device},
        )
    return AutoModelForCausalLM.from_pretrained(model_name, dtype=DTYPES[dtype], local_files_only=local_files_only)
