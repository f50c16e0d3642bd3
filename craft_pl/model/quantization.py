"""4-bit NF4 base weights (QLoRA) with bitsandbytes.

Two ways in, one result (every ``nn.Linear`` of the transformer blocks becomes a ``bitsandbytes`` ``Linear4bit``
holding NF4 codes; embeddings, norms and the output head stay in the model's dtype):

- ``quantize_linear_layers`` quantizes a model that is already in memory (the built-in tiny model, a warm-started
  base, a model built from a config). Layers are quantized one at a time, so the full-precision copy of each is
  freed before the next one is made.
- ``nf4_loading_config`` gives the ``BitsAndBytesConfig`` that ``from_pretrained`` uses to quantize a hub / local
  checkpoint while it loads (the full-precision model never sits in memory).

bitsandbytes is imported lazily: installs that never ask for 4-bit never touch it.
"""

from __future__ import annotations

import importlib.util
from typing import Iterable

import torch

NF4_SKIP_MODULES = ("lm_head",)
"""Linear layers kept in full precision: the output head (often tied to the embedding)."""


class QuantizationUnavailable(RuntimeError):
    """bitsandbytes cannot run NF4 here; the message says why and what to do."""


def require_bitsandbytes_installed() -> None:
    """Parse-time check (no import): the package is installed."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise QuantizationUnavailable(
            "policy.quantization='nf4' needs bitsandbytes, which is not installed; `pip install bitsandbytes` "
            "(>= 0.45 runs NF4 on CPU and CUDA) or set policy.quantization: null"
        )


def require_nf4_support(device: torch.device | str) -> None:
    """Build-time check: bitsandbytes imports and supports ``device``; raises ``QuantizationUnavailable`` with the
    reason otherwise."""
    require_bitsandbytes_installed()
    device = torch.device(device)
    try:
        import bitsandbytes
    except Exception as error:  # a broken native library shows up as any exception at import
        raise QuantizationUnavailable(
            f"policy.quantization='nf4': bitsandbytes is installed but does not load on this platform "
            f"({type(error).__name__}: {error}); reinstall a bitsandbytes build for this platform or set "
            "policy.quantization: null"
        ) from error
    supported = set(getattr(bitsandbytes, "supported_torch_devices", {"cuda"}))
    if device.type not in supported:
        raise QuantizationUnavailable(
            f"policy.quantization='nf4': bitsandbytes {bitsandbytes.__version__} has no 4-bit kernels for device "
            f"type {device.type!r} (it supports {sorted(supported)}); run on one of those or set "
            "policy.quantization: null"
        )


def _linear_layers(model: torch.nn.Module, skip: Iterable[str]) -> list[tuple[torch.nn.Module, str, torch.nn.Linear]]:
    skip = tuple(skip)
    found = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if type(child) is torch.nn.Linear and not any(full == s or full.endswith(f".{s}") for s in skip):
                found.append((module, child_name, child))
    return found


@torch.no_grad()
def quantize_linear_layers(
    model: torch.nn.Module,
    compute_dtype: torch.dtype,
    double_quant: bool = True,
    quant_storage: torch.dtype = torch.uint8,
    skip: Iterable[str] = NF4_SKIP_MODULES,
) -> int:
    """Replace every ``nn.Linear`` of ``model`` (except ``skip``) by an NF4 ``Linear4bit``, in place, one layer at a
    time; returns how many were replaced. The quantized weights live on the device the layer was on."""
    import bitsandbytes as bnb

    count = 0
    for parent, child_name, linear in _linear_layers(model, skip):
        device = linear.weight.device
        quantized = bnb.nn.Linear4bit(
            linear.in_features, linear.out_features, bias=linear.bias is not None, compute_dtype=compute_dtype,
            compress_statistics=double_quant, quant_type="nf4", quant_storage=quant_storage, device="meta",
        )
        weight = bnb.nn.Params4bit(
            linear.weight.data, requires_grad=False, compress_statistics=double_quant, quant_type="nf4", quant_storage=quant_storage,
        )
        quantized.weight = weight.to(device)  # moving a Params4bit quantizes it
        if linear.bias is not None:
            quantized.bias = torch.nn.Parameter(linear.bias.data.to(compute_dtype), requires_grad=False)
        setattr(parent, child_name, quantized)
        del linear, weight
        count += 1
    keep_training_layout(model)
    if count:
        model.is_loaded_in_4bit = True  # what peft looks at to wrap Linear4bit layers with its 4-bit LoRA layer
    return count


def keep_training_layout(model: torch.nn.Module) -> None:
    """Stop bitsandbytes from re-packing 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, ``Linear4bit`` re-packs its weight the first time it runs in eval mode without grad
    (generation) and never packs it back, so the next training forward fails. RL alternates the two every step.
    """
    import sys

    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:
        return
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def nf4_loading_config(compute_dtype: torch.dtype, double_quant: bool = True,
                       quant_storage: torch.dtype = torch.uint8):
    """``transformers.BitsAndBytesConfig`` that loads a checkpoint straight into NF4 (QLoRA's recipe)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=quant_storage,
        llm_int8_skip_modules=list(NF4_SKIP_MODULES),
    )


def count_4bit_layers(model: torch.nn.Module) -> int:
    """Number of ``Linear4bit`` layers in ``model`` (0 when bitsandbytes was never imported)."""
    import sys

    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:
        return 0
    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
