"""A stopped run is not a success: SIGTERM exits 143 and Ctrl-C (SIGINT) 130, after saving ``interrupted.ckpt``; four
configurations that used to end in tracebacks end in one ``error:`` line naming the setting and the fix."""

import os
import signal

import pytest
import torch
from lightning.pytorch.callbacks import Callback

import craft_pl.cli
from craft_pl.storage.atomic import WriteError
from craft_pl.cli import EXIT_SIGINT, EXIT_SIGTERM, main
from tests.test_cli_errors import one_error_line
from tests.test_training_toy import TOY_ARGS
from tests.toy_env import PickWordEnv


class SignalSelf(Callback):
    """Sends this process ``signal_name`` when the second RL step starts (one step is complete and snapshotted)."""

    def __init__(self, signal_name: str = "SIGTERM") -> None:
        self.signal_name = signal_name

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == 1 and batch_idx == 0:
            os.kill(os.getpid(), getattr(signal, self.signal_name))


class RaisingHintEnv(PickWordEnv):
    """Offers privileged context, but asking for it raises (a hint service that is down)."""

    def privileged_context(self, task, reliable_only: bool = False) -> str:
        raise RuntimeError("hint service unreachable")


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, code", [("SIGTERM", EXIT_SIGTERM), ("SIGINT", EXIT_SIGINT)])
def test_a_signal_exits_non_zero_after_saving_the_last_step(tmp_path, capsys, signal_name, code):
    """Guards: SIGTERM used to exit 0 (Lightning's SIGTERMException is a code-less SystemExit), so a scheduler counted
    a preempted run as a success; Ctrl-C exited 1 like any failure."""
    root = tmp_path / "run"
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *TOY_ARGS, f"--trainer.default_root_dir={root}", "--trainer.max_epochs=5",
                  f"--model.policy.warm_start.cache_dir={tmp_path / 'cache'}", "--data.val_tasks=1",
                  "--trainer.check_val_every_n_epoch=100", "--trainer.callbacks+=tests.test_exit_codes.SignalSelf",
                  f"--trainer.callbacks.signal_name={signal_name}"])
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    assert exit_info.value.code == code
    assert list(root.rglob("interrupted.ckpt"))
    assert f"exit status {code}" in capsys.readouterr().err


def _one_error_line(capsys, monkeypatch, args, env=None) -> str:
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    return one_error_line(capsys, monkeypatch, [*TOY_ARGS, *args])


@pytest.mark.parametrize("args, env, words", [
    pytest.param(["--trainer.accelerator=gpu"], None, ["trainer.accelerator", "--trainer.accelerator=cpu"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    (["--trainer.max_epochs=-5"], None, ["max_epochs", "-5"]),
    (["--config=configs/method/sdar.yaml", "--data.env=tests.test_exit_codes.RaisingHintEnv"], None,
     ["RaisingHintEnv", "privileged_context raised RuntimeError: hint service unreachable", "grpo.yaml"]),
    (["--model.policy.model=Qwen/NoSuchModel-0.5B"], {"HF_HUB_OFFLINE": "1"},
     ["Qwen/NoSuchModel-0.5B", "HF_HUB_OFFLINE", "huggingface-cli download"]),
], ids=["gpu-on-cpu", "negative-max-epochs", "raising-privileged-context", "offline-hub-model"])
def test_configurations_that_used_to_give_tracebacks_give_one_line(tmp_path, capsys, monkeypatch, args, env, words):
    """Guards: each of these ended in a traceback (Lightning's MisconfigurationException; the environment's own
    exception inside the warm start's demonstrations; transformers' OSError when loading an uncached hub model
    offline)."""
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    line = _one_error_line(capsys, monkeypatch, [*args, f"--trainer.default_root_dir={tmp_path}"], env)
    assert all(word in line for word in words), line


def test_a_write_error_during_a_run_is_one_line_and_exit_1(capsys, monkeypatch, tmp_path):
    """Guards: a full disk during a run ended in a traceback naming no file."""
    def full_disk(*args, **kwargs):
        raise WriteError(f"cannot write {tmp_path / 'x.ckpt'}: No space left on device (ENOSPC); free space")

    monkeypatch.setattr(craft_pl.cli, "_cli", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and str(tmp_path / "x.ckpt") in err and len(err.splitlines()) == 1
