"""``python -m craft_pl fit|validate|test --config ...``: LightningCLI over ``CraftModule`` and ``RolloutDataModule``.

Logs and checkpoints go under ``trainer.default_root_dir`` (TensorBoard is Lightning's default logger there).
"""

from __future__ import annotations

import inspect
import math
import sys
import tempfile
from pathlib import Path

import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

from craft_pl.storage.atomic import WriteError
from craft_pl.callbacks import CreditInspector, EvaluationReport, InterruptCheckpoint
from craft_pl.callbacks.interrupt_checkpoint import interrupts
from craft_pl.checkpointing import CheckpointError, config_differences, flatten, load_checkpoint
from craft_pl.datamodule import RolloutDataModule
from craft_pl.distributed import explain_strategy_error
from craft_pl.module import CraftModule, connect
from craft_pl.preflight import offline_model_problem, privileged_context_problem, trainer_problem
from craft_pl.storage.run_folder import FolderInUse, claim_run_folder, release_locks

EXIT_SIGINT = 130
"""Exit status after Ctrl-C (SIGINT), 128 + 2 as shells report it: a stopped run is not a success."""
EXIT_SIGTERM = 143
"""Exit status after SIGTERM (a scheduler's preemption), 128 + 15: a stopped run is not a success."""

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
        claim_run_folder(self.trainer)
        self.model.run_config = self._run_config()
        self._trainer_loads_weights_only()
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        saved = self.checkpoint_config
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
        claim_run_folder(self.trainer)
        self.model.run_config = self._run_config()
        self._trainer_loads_weights_only()

    def before_test(self) -> None:
        claim_run_folder(self.trainer)
        self.model.run_config = self._run_config()
        self._trainer_loads_weights_only()

    def parse_arguments(self, parser, args) -> None:
        """Parse, then read ``--ckpt_path`` with ``weights_only=True`` and verify it against its digest before
        LightningCLI or the Trainer opens it: a missing, unsafe or corrupt file raises ``CheckpointError``, which
        ``main`` prints in one line. Lightning's names (``last``, ...) are verified by ``on_load_checkpoint``."""
        super().parse_arguments(parser, args)
        self.checkpoint_config: dict | None = None
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            config = load_checkpoint(ckpt_path).get("craft_config")
            try:  # compared with this run's below: data from a file, checked before anything reads it
                if config is not None and not isinstance(config, dict):
                    raise ValueError(f"it is a {type(config).__name__}, not a mapping")
                flatten(config or {})
            except ValueError as error:
                raise CheckpointError(f"checkpoint {ckpt_path} holds a malformed run configuration ({error}); it was "
                                      "not written by `python -m craft_pl fit`") from None
            self.checkpoint_config = config

    def _trainer_loads_weights_only(self) -> None:
        """The Trainer's own load of ``--ckpt_path`` uses ``weights_only=True`` too, whatever torch's default."""
        config = self.config_init[self.subcommand]
        if "weights_only" in config and config["weights_only"] is None:
            config["weights_only"] = True

    def before_instantiate_classes(self) -> None:
        """Checks of the parsed values that no constructor sees: every number finite, the output folder writable."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        problems = [f"{key}={value} is not a finite number; give a finite value" for key, value in
                    non_finite_values(config.as_dict())]
        root = config.get("trainer.default_root_dir") if self.subcommand else None
        unwritable = root and not_writable(str(root))
        if unwritable:
            problems.append(f"trainer.default_root_dir={root} cannot be written ({unwritable}); choose a folder you "
                            "can write to")
        if problems:
            print(f"error: invalid configuration: {problems[0]}", file=sys.stderr)
            raise SystemExit(2)

    def instantiate_classes(self) -> None:
        """Build the objects and connect the module to its data side; a bad value (checked in constructors and in
        ``connect``, before any model loads) exits with its message in one line."""
        try:
            super().instantiate_classes()
            connect(self.model, self.datamodule)
        except ValueError as error:
            print(f"error: invalid configuration: {explain_strategy_error(error)}", file=sys.stderr)
            raise SystemExit(2) from None
        except MisconfigurationException as error:  # the Trainer's own checks (accelerator, max_epochs, ...)
            print(f"error: invalid configuration: {trainer_problem(error)}", file=sys.stderr)
            raise SystemExit(2) from None
        problem = offline_model_problem(self.model.policy) or privileged_context_problem(self.model, self.datamodule)
        if problem:
            print(f"error: invalid configuration: {problem}", file=sys.stderr)
            raise SystemExit(2)


def non_finite_values(tree, prefix: str = "") -> list[tuple[str, float]]:
    """``(dotted key, value)`` of every NaN or infinite float in a nested configuration."""
    found = []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += non_finite_values(value, f"{prefix}{key}.")
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            found += non_finite_values(value, f"{prefix[:-1]}[{index}].")
    elif isinstance(tree, float) and not math.isfinite(tree):
        found.append((prefix[:-1], tree))
    return found


def not_writable(directory: str) -> str | None:
    """Why ``directory`` cannot hold the run's logs and checkpoints (None when it can); it is created if missing."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def main(args: list[str] | None = None, run: bool = True) -> CraftCLI:
    """Run the CLI. Exit status: 0 done, 1 failed, 2 invalid configuration or checkpoint, 130 stopped by Ctrl-C
    (SIGINT), 143 stopped by SIGTERM (``interrupted.ckpt`` saved either way once an RL step completed)."""
    interrupts.clear()
    try:
        return _cli(args, run)
    except (CheckpointError, FolderInUse) as error:  # a bad --ckpt_path, a folder another run writes into
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except WriteError as error:  # full or read-only disk: the file it could not write, earlier files intact
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except SIGTERMException:  # a SystemExit without a code: the scheduler would count a preempted run as a success
        print(f"stopped by SIGTERM (exit status {EXIT_SIGTERM})", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_SIGTERM) from None
    except KeyboardInterrupt:  # Ctrl-C outside Lightning's loop (building, warm start before fit)
        print(f"stopped by Ctrl-C (exit status {EXIT_SIGINT})", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_SIGINT) from None
    except SystemExit as stop:  # Lightning ends a Ctrl-C in its loop with sys.exit(1)
        if "SIGINT" in interrupts:
            print(f"stopped by Ctrl-C (exit status {EXIT_SIGINT})", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_SIGINT) from None
        if "SIGTERM" in interrupts and not stop.code:
            raise SystemExit(EXIT_SIGTERM) from None
        raise
    finally:
        release_locks()


def _cli(args: list[str] | None, run: bool) -> CraftCLI:
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
