"""``python -m craft_pl fit|validate|test --config ...``: LightningCLI over ``CraftModule`` and ``RolloutDataModule``.

Logs and checkpoints go under ``trainer.default_root_dir`` (TensorBoard is Lightning's default logger there).
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI

from craft_pl.callbacks import CreditInspector, RolloutMetrics
from craft_pl.data import RolloutDataModule
from craft_pl.module import CraftModule

TRAINER_DEFAULTS = {
    "reload_dataloaders_every_n_epochs": 1,
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 1,
    "accelerator": "cpu",
    "devices": 1,
    "deterministic": True,
}


class CraftCLI(LightningCLI):
    """LightningCLI with craft_pl's defaults; several ``--config`` files compose left to right."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(RolloutMetrics, "rollout_metrics")
        parser.add_lightning_class_args(CreditInspector, "credit_inspector")

    def instantiate_classes(self) -> None:
        """Build the objects; a bad value (checked in constructors, before any model loads) exits with its message."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            print(f"error: invalid configuration: {error}", file=sys.stderr)
            raise SystemExit(2) from None


def main(args: list[str] | None = None, run: bool = True) -> CraftCLI:
    return CraftCLI(
        CraftModule,
        RolloutDataModule,
        trainer_defaults=TRAINER_DEFAULTS,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
