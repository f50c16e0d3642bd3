"""Lightning callbacks for craft_pl (installed as ``craft_pl.callbacks``)."""

from craft_pl.callbacks.credit_inspector import CreditInspector
from craft_pl.callbacks.evaluation_report import EvaluationReport
from craft_pl.callbacks.interrupt_checkpoint import InterruptCheckpoint

__all__ = ["CreditInspector", "EvaluationReport", "InterruptCheckpoint"]
