"""``python -m craft_pl fit|validate|test --config ...``: LightningCLI over ``CraftModule`` and ``RolloutDataModule``.

Logs and checkpoints go under ``trainer.default_root_dir`` (TensorBoard is Lightning's default logger there).
"""

from __future__ import annotations

import inspect
import sys

import torch
import yaml
from lightning.pytorch.cli import LightningCLI

from craft_pl.callbacks import CreditInspector, EvaluationReport, InterruptCheckpoint
from craft_pl.checkpointing import config_differences
from craft_pl.datamodule import RolloutDataModule
from craft_pl.distributed import explain_strategy_error
from craft_pl.module import CraftModule, connect

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
        parser.add_lightning_class_args(CreditInspector, "credit_inspector")
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt_checkpoint")
        parser.add_lightning_class_args(EvaluationReport, "evaluation_report")
        parser.add_argument("--allow_config_change", type=bool, default=False,
                            help="Resume from --ckpt_path even when settings that change results differ from the "
                                 "checkpoint's (they are listed either way).")

    def _run_config(self) -> dict:
        """This run's configuration as plain data (what checkpoints store and ``export`` rebuilds from)."""
        parser = self._parser(self.subcommand)
        config = yaml.safe_load(parser.dump(self.config[self.subcommand], skip_none=False))
        method_arguments = set(inspect.signature(getattr(self.trainer_class, self.subcommand)).parameters)
        method_arguments -= {"self", "model", "datamodule", "dataloaders", "train_dataloaders", "val_dataloaders"}
        for key in [*method_arguments, "config", "allow_config_change"]:  # ckpt_path, weights_only, verbose, ...
            config.pop(key, None)
        return config

    def before_fit(self) -> None:
        """Record the configuration; a resume whose results-changing settings differ from the checkpoint's is refused."""
        self.model.run_config = self._run_config()
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry"):
            return
        saved = torch.load(ckpt_path, map_location="cpu", weights_only=False).get("craft_config")
        differences = config_differences(saved, self.model.run_config) if saved is not None else []
        if not differences:
            return
        listing = "\n  ".join(differences)
        if self.config[self.subcommand].get("allow_config_change"):
            print(f"warning: resuming with settings that differ from the checkpoint's:\n  {listing}", file=sys.stderr)
            return
        print(f"error: {ckpt_path} was trained with different settings, and these change results:\n  {listing}\n"
              "resume with the original configuration, or pass --allow_config_change true to accept the change",
              file=sys.stderr)
        raise SystemExit(2)

    def before_validate(self) -> None:
        self.model.run_config = self._run_config()

    def before_test(self) -> None:
        self.model.run_config = self._run_config()

    def instantiate_classes(self) -> None:
        """Build the objects; a bad value (checked in constructors, before any model loads) exits with its message."""
        try:
            super().instantiate_classes()
        except ValueError as error:
            print(f"error: invalid configuration: {explain_strategy_error(error)}", file=sys.stderr)
            raise SystemExit(2) from None
        connect(self.model, self.datamodule)


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
