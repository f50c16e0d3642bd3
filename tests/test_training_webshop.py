"""End-to-end runs of the real CLI on the built-in WebShop with configs/smoke.yaml."""

from pathlib import Path

import pytest
import torch

from craft_pl.cli import main
from tests.tb import read_scalars

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TAGS = ["rollout/success_rate", "rollout/score", "rollout/valid_action_ratio", "rollout/turns", "rollout/env_errors",
        "train/loss", "train/pg_loss", "train/kl", "train/entropy", "train/clip_fraction", "train/grad_norm",
        "timing/rollout_s", "timing/update_s", "val/success_rate", "val/score"]


def _smoke(tmp_path, *overlays, extra=()):
    args = ["fit", "--config", str(CONFIGS / "webshop.yaml"), *[a for o in overlays for a in ("--config", str(o))],
            "--config", str(CONFIGS / "smoke.yaml"), f"--trainer.default_root_dir={tmp_path / 'run'}",
            f"--model.policy.init_args.warm_start.cache_dir={tmp_path / 'cache'}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *extra]
    return main(args), tmp_path / "run"


@pytest.mark.slow
def test_smoke_fit_trains_and_logs_every_tag(tmp_path):
    cli, root = _smoke(tmp_path, CONFIGS / "method" / "grpo.yaml")
    model = cli.model.policy.model
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(torch.count_nonzero(p) for p in lora_b)  # LoRA B starts at 0: it moved
    scalars = read_scalars(root)
    missing = [tag for tag in TAGS if tag not in scalars]
    assert not missing
    assert len(scalars["train/loss"]) == 2 * 2  # 2 RL steps x 2 mini-batches
    assert "val/success_rate_privileged" in scalars
    assert list(root.rglob("*.ckpt")) and list(root.rglob("config.yaml"))


@pytest.mark.parametrize("method", ["grpo_opsd", "opsd", "sdar"])
@pytest.mark.slow
def test_each_self_distillation_preset_runs_one_step(tmp_path, method):
    cli, root = _smoke(tmp_path, CONFIGS / "method" / f"{method}.yaml",
                       extra=["--trainer.max_epochs=1", "--data.val_tasks=2", "--data.val_privileged=false"])
    scalars = read_scalars(root)
    for tag in ["distill/loss", "distill/gate_mean", "distill/gate_active_ratio", "distill/teacher_gap_mean",
                "teacher/context_tokens", "teacher/truncated_rows"]:
        assert tag in scalars, tag
    gates = [v for _, v in scalars["distill/gate_mean"]]
    if method == "grpo_opsd":
        assert all(v == 0.5 for v in gates)
    assert scalars["teacher/context_tokens"][0][1] > 0
