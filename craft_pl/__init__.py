"""craft_pl: CRAFT and its baselines for self-distilled agentic RL, on PyTorch Lightning.

Importing it silences start-up noise that says nothing to a craft_pl user: bitsandbytes' note that its optional CPU
kernels are not installed (4-bit still works), a transformers deprecation that peft triggers, Lightning's advertising
tips, its note on modules in eval mode (craft_pl keeps the frozen base in eval mode on purpose) and a torch
pytree deprecation inside Lightning.
"""

import logging
import warnings


class _DropMessages(logging.Filter):
    def __init__(self, *starts: str) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropMessages("💡 Tip"))
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
