"""Exact resume: 4 RL steps == 2 RL steps + resume for 2 more, to the bit; config changes on resume are refused."""

import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from craft_pl.cli import main
from tests.tb import read_scalars
from tests.test_training_toy import TOY_ARGS


def _fit(tmp_path, name, epochs, extra=()):
    root = tmp_path / name
    args = ["fit", *TOY_ARGS, f"--trainer.default_root_dir={root}", f"--trainer.max_epochs={epochs}",
            f"--model.policy.warm_start.cache_dir={tmp_path / 'cache'}", "--model.policy.teacher=ema", *extra]
    return main(args), root


def _bits(values):
    return [struct.pack("<f", v) for v in values]


def _checkpoint(root):
    (path,) = [p for p in root.rglob("*.ckpt") if p.name != "interrupted.ckpt"]
    return path


@pytest.mark.slow
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    whole, whole_root = _fit(tmp_path, "whole", 4)
    _, half_root = _fit(tmp_path, "half", 2)
    ckpt = _checkpoint(half_root)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["state_dict"] and all("lora_" in key for key in saved["state_dict"])  # adapters only
    assert any(".teacher." in key for key in saved["state_dict"])  # the EMA teacher adapter is state too
    assert {"craft_pillars", "craft_rng", "craft_config", "RolloutDataModule"} <= set(saved)
    resumed, resumed_root = _fit(tmp_path, "resumed", 4, [f"--ckpt_path={ckpt}"])

    whole_losses = [v for _, v in read_scalars(whole_root)["train/loss"]]
    first_half = [v for _, v in read_scalars(half_root)["train/loss"]]
    second_half = [v for _, v in read_scalars(resumed_root)["train/loss"]]
    assert len(whole_losses) == 8
    assert _bits(first_half + second_half) == _bits(whole_losses)
    final_whole = whole.model.policy.model.state_dict()
    final_resumed = resumed.model.policy.model.state_dict()
    assert final_whole.keys() == final_resumed.keys()
    for key, value in final_whole.items():
        assert torch.equal(value, final_resumed[key]), key


def test_resume_with_a_result_changing_setting_is_refused_with_the_keys(tmp_path, capsys):
    _, root = _fit(tmp_path, "run", 1)
    ckpt = _checkpoint(root)
    with pytest.raises(SystemExit) as exit_info:
        _fit(tmp_path, "changed", 2, [f"--ckpt_path={ckpt}", "--model.lr=0.5", "--data.group_size=2"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "model.lr: 0.01 -> 0.5" in error and "data.group_size: 4 -> 2" in error
    assert "--allow_config_change" in error
    # longer training and another output directory are fine; an explicit flag accepts the rest
    _fit(tmp_path, "longer", 2, [f"--ckpt_path={ckpt}"])
    _fit(tmp_path, "accepted", 2, [f"--ckpt_path={ckpt}", "--model.lr=0.5", "--allow_config_change=true"])


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
def test_a_signal_during_a_step_saves_the_last_completed_step_and_resuming_it_is_exact(tmp_path, signal_number):
    root = tmp_path / "killed"
    args = [sys.executable, "-m", "craft_pl", "fit", *TOY_ARGS, f"--trainer.default_root_dir={root}",
            "--trainer.max_epochs=100000", f"--model.policy.warm_start.cache_dir={tmp_path / 'cache'}",
            "--data.val_tasks=1", "--trainer.check_val_every_n_epoch=100000"]
    process = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(root.rglob("epoch=2-*.ckpt")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal_number)
        output, _ = process.communicate(timeout=120)
    finally:
        process.kill()  # never leave a 100000-step run behind when the test fails
    (interrupted,) = root.rglob("interrupted.ckpt")
    assert "resume with" in output
    saved = torch.load(interrupted, map_location="cpu", weights_only=False)
    steps = saved["epoch"] + 1  # RL steps completed when the snapshot was taken
    assert steps >= 3 and saved["global_step"] == 2 * steps
    resumed, _ = _fit(tmp_path, "resumed", steps + 1, [f"--ckpt_path={interrupted}", "--model.policy.teacher=policy",
                                                        "--data.val_tasks=1", "--trainer.check_val_every_n_epoch=100000"])
    whole, _ = _fit(tmp_path, "whole", steps + 1, ["--model.policy.teacher=policy", "--data.val_tasks=1",
                                                   "--trainer.check_val_every_n_epoch=100000"])
    for key, value in whole.model.policy.model.state_dict().items():
        assert torch.equal(value, resumed.model.policy.model.state_dict()[key]), key
