"""The model: the ``Policy`` (a causal LM with its adapters, reference and teacher views), how it is loaded, the
built-in tiny model, 4-bit quantization, per-token log-probs and the warm start that clones the expert before RL."""

from craft_pl.model.loading import BUILTIN_TINY
from craft_pl.model.policy import Policy
from craft_pl.model.tiny import TinyModelSpec
from craft_pl.model.warm_start import WarmStart

__all__ = ["BUILTIN_TINY", "Policy", "TinyModelSpec", "WarmStart"]
