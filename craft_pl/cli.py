"""``python -m craft_pl fit|validate|test --config ...``: LightningCLI over ``CraftModule`` and ``RolloutDataModule``.

Logs and checkpoints go under ``trainer.default_root_dir`` (TensorBoard is Lightning's default logger there).
"""

from __future__ import annotations

import inspect
import math
import os
import re
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
from craft_pl.advantages import GRPOAdvantage
from craft_pl.objective import Objective
from craft_pl.pillars import craft_pillars
from craft_pl.preflight import offline_model_problem, privileged_context_problem, trainer_problem
from craft_pl.storage.run_folder import (VERSION_ENV, FolderInUse, _is_first_process, claim_run_folder, hold_lock,
                                         release_locks)

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


PROGRAM = "craft_pl"
DESCRIPTION = ("Self-distilled agentic RL of language-model agents (CRAFT, SDAR, GRPO, ...). Several --config files "
               "compose left to right: an environment, then a method overlay, then ablations.")
OWN_OPTIONS = ("craft_pl's own options: --model.* (CraftModule: the policy, the objective and its advantage, the "
               "credit pillars, the optimizer), --data.* (RolloutDataModule: the environment, tasks, rollouts, "
               "evaluation panels), --credit_inspector.*, --interrupt_checkpoint.*, --evaluation_report.*; --trainer.* "
               "is Lightning's. The classes chosen by class_path document their knobs with --model.objective.help "
               "CLASS, --model.pillars.help CLASS, --data.env.help CLASS; --print_config shows what a run trains.")
EXPORT_HELP = "Write Hugging Face folders (adapter, optionally merged) from a checkpoint of fit."


class CraftCLI(LightningCLI):
    """LightningCLI with craft_pl's defaults; several ``--config`` files compose left to right."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, validate, test (a policy has nothing to ``predict``); ``export`` is added to the help by
        ``_add_subcommands`` and run by ``main``."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name != "predict"}

    def _add_subcommands(self, parser, **kwargs) -> None:
        super()._add_subcommands(parser, **kwargs)
        for name in ("validate", "test"):  # EvaluationReport prints each evaluation in one line: no second table
            self._subcommand_parsers[name].set_defaults(verbose=False)
        export = self.parser_class(prog=f"{PROGRAM} export", description=EXPORT_HELP + " Options: "
                                   f"{PROGRAM} export --help.")
        parser._subcommands_action.add_subcommand("export", export, help=EXPORT_HELP)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(CreditInspector, "credit_inspector")
        parser.add_lightning_class_args(InterruptCheckpoint, "interrupt_checkpoint")
        parser.add_lightning_class_args(EvaluationReport, "evaluation_report")
        parser.set_defaults(default_method())  # --print_config shows what trains when no method overlay is given
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
        """Record the configuration; a resume whose results-changing settings differ from the checkpoint's is refused.
        A resume from a checkpoint of this folder's ``version_N`` goes on logging into ``version_N``."""
        ckpt_path = self.config[self.subcommand].get("ckpt_path")
        if not continue_version(self.trainer, ckpt_path):
            claim_run_folder(self.trainer)
        self.model.run_config = self._run_config()
        self._trainer_loads_weights_only()
        saved = self._explicit_method(self.checkpoint_config)
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

    def _explicit_method(self, saved: dict | None) -> dict | None:
        """A stored configuration with ``model.objective`` / ``model.pillars`` null (written before they defaulted to
        explicit values) with those nulls replaced by what they meant: the parser's defaults, resolved."""
        model = (saved or {}).get("model")
        if not isinstance(model, dict) or all(model.get(key, 0) is not None for key in ("objective", "pillars")):
            return saved
        parser = self._parser(self.subcommand)
        defaults = yaml.safe_load(parser.dump(parser.get_defaults(), skip_none=False, skip_check=True))["model"]
        filled = {key: defaults[key] if key in ("objective", "pillars") and value is None else value
                  for key, value in model.items()}
        return {**saved, "model": filled}

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


def default_method() -> dict:
    """``model.objective`` and ``model.pillars`` as the code's defaults make them (CRAFT: ``Objective()`` with SDAR's
    coefficients and GRPO's advantage, and ``craft_pillars()``), written out so that the resolved configuration
    names them."""
    pillars = [{"class_path": f"{type(p).__module__}.{type(p).__name__}"} for p in craft_pillars()]
    advantage = {"class_path": f"{GRPOAdvantage.__module__}.{GRPOAdvantage.__name__}"}
    objective = {"class_path": f"{Objective.__module__}.{Objective.__name__}", "init_args": {"advantage": advantage}}
    return {"model.objective": objective, "model.pillars": pillars}


def continue_version(trainer, ckpt_path: str | None) -> bool:
    """Give the trainer's versioned logger the version of ``ckpt_path`` when the checkpoint lies in one of its
    ``version_N/checkpoints`` folders, so that a resumed run's curves continue in ``version_N`` (its folder held by
    this run's lock); False when it does not."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = [lg for lg in trainer.loggers if isinstance(lg, (TensorBoardLogger, CSVLogger)) and lg._version is None]
    if not ckpt_path or len(loggers) != len(trainer.loggers) or not loggers:
        return False
    folder = Path(ckpt_path).resolve().parent.parent
    match = re.fullmatch(r"version_(\d+)", folder.name)
    if not match or any(Path(lg.root_dir).resolve() != folder.parent for lg in loggers):
        return False
    for logger in loggers:
        logger._version = int(match.group(1))
    os.environ[VERSION_ENV] = match.group(1)  # processes a multi-process strategy launches log there too
    if _is_first_process():
        hold_lock(folder)
    return True


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
    words = sys.argv[1:] if args is None else args
    if words[:1] == ["export"]:
        from craft_pl.tools.export import main as export_main

        return export_main(words[1:])
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
        parser_kwargs={"prog": PROGRAM, "description": DESCRIPTION, "epilog": OWN_OPTIONS,
                       **{name: {"description": f"{PROGRAM} {name}. {OWN_OPTIONS}"} for name in ("fit", "validate", "test")}},
    )


if __name__ == "__main__":
    main(sys.argv[1:])
