"""End-to-end ``fit`` on the toy environment: parameters move, tags exist, same seed = same losses to the bit."""

import struct

import pytest
from pathlib import Path

import torch

from craft_pl.cli import main
from tests.tb import read_scalars

TOY_ARGS = [
    "--data.env=tests.toy_env.PickWordEnv",
    "--data.tasks_per_step=2", "--data.group_size=4", "--data.val_tasks=4", "--data.max_new_tokens=10",
    "--data.num_mini_batches=2",
    "--model.policy=craft_pl.model.Policy",
    "--model.policy.tiny.vocab_size=300", "--model.policy.tiny.hidden_size=32", "--model.policy.tiny.num_layers=1",
    "--model.policy.tiny.num_heads=2", "--model.policy.tiny.num_kv_heads=1", "--model.policy.tiny.intermediate_size=64",
    "--model.policy.warm_start.num_demos=40", "--model.policy.warm_start.steps=30",
    "--model.policy.warm_start.batch_size=8", "--model.lr=1e-2",
    "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
]


def _fit(tmp_path, name, extra=()):
    root = tmp_path / name
    args = ["fit", *TOY_ARGS, f"--trainer.default_root_dir={root}",
            f"--model.policy.warm_start.cache_dir={tmp_path / 'cache'}", *extra]
    cli = main(args)
    return cli, root


@pytest.mark.slow
def test_fit_trains_the_adapter_and_logs_every_tag(tmp_path):
    cli, root = _fit(tmp_path, "run")
    policy = cli.model.policy
    lora = {n: p for n, p in policy.model.named_parameters() if p.requires_grad}
    assert lora and any(torch.count_nonzero(p).item() for n, p in lora.items() if "lora_B" in n)
    scalars = read_scalars(root)
    for tag in ["rollout/success_rate", "rollout/score", "rollout/valid_action_ratio", "rollout/turns",
                "rollout/env_errors", "train/loss", "train/pg_loss", "train/kl", "train/entropy",
                "train/clip_fraction", "train/grad_norm", "timing/rollout_s", "timing/update_s",
                "val/success_rate", "val/score"]:
        assert tag in scalars, tag
    assert len(scalars["train/loss"]) == 2 * 2  # epochs x mini-batches: one value per optimizer step
    assert scalars["val/success_rate"][0][0] == 0  # validation before the first RL step
    assert list(root.rglob("config.yaml")) and list(root.rglob("*.ckpt"))


@pytest.mark.slow
def test_same_seed_same_losses_to_the_bit(tmp_path):
    _, first = _fit(tmp_path, "a")
    _, second = _fit(tmp_path, "b")  # the second run loads the cached warm start
    _, other = _fit(tmp_path, "c", ["--seed_everything=1"])

    def bits(root):
        return [struct.pack("<f", v) for _, v in read_scalars(root)["train/loss"]]

    assert bits(first) == bits(second)
    assert bits(first) != bits(other)


def _losses(root):
    return [struct.pack("<f", v) for _, v in read_scalars(root)["train/loss"]]


def test_all_pillars_disabled_logs_sdar_losses_to_the_bit(tmp_path):
    configs = Path(__file__).resolve().parent.parent / "configs"
    _, sdar = _fit(tmp_path, "sdar", ["--config", str(configs / "method" / "sdar.yaml")])
    _, off = _fit(tmp_path, "off", ["--config", str(configs / "ablations" / "craft_all_disabled.yaml")])
    _, craft = _fit(tmp_path, "craft", ["--config", str(configs / "method" / "craft.yaml")])
    assert _losses(sdar) == _losses(off)
    assert _losses(craft) != _losses(sdar)
    scalars = read_scalars(craft)
    for tag in ["pillar/cti/ess_mean", "pillar/cti/valid_fraction", "pillar/controller/distill_coef",
                "pillar/polar_kl/forward_fraction"]:
        assert tag in scalars, tag


@pytest.mark.slow
def test_credit_inspection_writes_histograms_pictures_and_text(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    configs = Path(__file__).resolve().parent.parent / "configs"
    _, root = _fit(tmp_path, "inspect", ["--config", str(configs / "method" / "craft.yaml"),
                                         "--credit_inspector.every_n_steps=1"])
    tags = {"histograms": set(), "images": set(), "tensors": set()}
    for path in root.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(path), size_guidance={"images": 0, "histograms": 0, "tensors": 0})
        accumulator.Reload()
        for kind in tags:
            tags[kind] |= set(accumulator.Tags()[kind])
    assert {"credit/gate", "credit/credit", "credit/cti"} <= tags["histograms"]
    assert "credit/trajectories" in tags["images"]
    assert any(tag.startswith("credit/trajectories_text") for tag in tags["tensors"])
    _, plain = _fit(tmp_path, "plain", ["--config", str(configs / "method" / "craft.yaml"),
                                        "--credit_inspector.every_n_steps=0"])
    assert _losses(root) == _losses(plain)  # inspecting never changes training


def test_adaptive_cringe_preset_trains(tmp_path):
    configs = Path(__file__).resolve().parent.parent / "configs"
    _, root = _fit(tmp_path, "cringe", ["--config", str(configs / "method" / "adaptive_cringe.yaml")])
    scalars = read_scalars(root)
    assert "train/cringe_loss" in scalars and "pillar/cringe/negative_fraction" in scalars


ABLATIONS = sorted((Path(__file__).resolve().parent.parent / "configs" / "ablations").glob("*.yaml"))


@pytest.mark.parametrize("overlay", ABLATIONS, ids=lambda p: p.stem)
@pytest.mark.slow
def test_every_ablation_overlay_runs(tmp_path, overlay):
    cli, root = _fit(tmp_path, overlay.stem, ["--config", str(overlay), "--trainer.max_epochs=1",
                                              "--model.validate_at_start=false"])
    enabled = {p.name for p in cli.model.loss_recipe.active_pillars}
    assert enabled == {name for name in ("cti", "controller", "polar_kl") if name in overlay.stem}
    assert read_scalars(root)["train/loss"]


def test_non_finite_losses_are_skipped_then_reported(tmp_path, monkeypatch):
    from craft_pl.objective import Objective

    original = Objective.compose
    calls = {"n": 0}

    def sometimes_nan(self, terms):
        loss, parts = original(self, terms)
        calls["n"] += 1
        return (loss * float("nan"), parts) if calls["n"] == 2 else (loss, parts)

    monkeypatch.setattr(Objective, "compose", sometimes_nan)
    cli, root = _fit(tmp_path, "nan")
    scalars = read_scalars(root)
    assert scalars["train/nonfinite_losses"] == [(1, 1.0)]
    assert cli.trainer.global_step == 3  # 4 mini-batches, one update skipped
    assert all(torch.isfinite(p).all() for p in cli.model.policy.trainable_parameters())

    monkeypatch.setattr(Objective, "compose", lambda self, terms: (original(self, terms)[0] * float("inf"), {}))
    with pytest.raises(FloatingPointError, match="non-finite losses in a row"):
        _fit(tmp_path, "inf")
