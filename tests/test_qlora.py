"""QLoRA: NF4 base (bitsandbytes) + LoRA on CPU; reference = adapters off; bad combinations fail with the reason."""

from pathlib import Path

import pytest
import torch

from craft_pl.model import Policy
from craft_pl.model.quantization import QuantizationUnavailable, count_4bit_layers
from tests.conftest import TINY, toy_corpus

bnb = pytest.importorskip("bitsandbytes")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _pairs(policy):
    prompts = [policy.encode_prompt("Task: choose apple\n"), policy.encode_prompt("Task: choose brick please\n")]
    responses = [policy.encode_response("<think>ok</think><action>apple</action>"),
                 policy.encode_response("<action>brick</action>")]
    return prompts, responses


def test_nf4_forward_backward_trains_only_the_adapter():
    full = Policy(tiny=TINY)
    full.build(toy_corpus(), None, seed=0)
    policy = Policy(tiny=TINY, quantization="nf4", compute_dtype="float32")
    policy.build(toy_corpus(), None, seed=0)
    adapted_layers = sum(name.endswith("lora_A.policy") for name, _ in full.model.named_modules())
    assert count_4bit_layers(policy.model) == adapted_layers == 7 * TINY.num_layers  # every projection
    assert policy.reference is None  # the reference is the 4-bit base with adapters off, never a second copy
    for name, parameter in policy.model.named_parameters():
        assert parameter.requires_grad == ("lora_" in name and ".policy." in name), name

    prompts, responses = _pairs(policy)
    reference, _, mask = policy.token_logprobs(prompts, responses, "reference")
    logp, entropy, mask = policy.token_logprobs(prompts, responses, "policy", with_entropy=True)
    unquantized, _, _ = full.token_logprobs(prompts, responses, "policy")
    assert torch.isfinite(logp).all() and torch.isfinite(entropy).all()
    assert torch.equal(logp, reference)  # LoRA B starts at zero
    assert 0 < (logp - unquantized)[mask].abs().mean() < 0.5  # close to, not equal to, the full-precision model

    (-(logp * mask).sum() / mask.sum()).backward()
    grads = {n: p.grad for n, p in policy.model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert any(torch.count_nonzero(g) for n, g in grads.items() if "lora_B" in n)

    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2)
    optimizer.step()
    after, _, _ = policy.token_logprobs(prompts, responses, "policy")
    reference_after, _, _ = policy.token_logprobs(prompts, responses, "reference")
    assert not torch.equal(after, logp)
    assert torch.equal(reference_after, reference)


def test_nf4_teacher_adapter_and_gradient_checkpointing():
    policy = Policy(tiny=TINY, quantization="nf4", teacher="ema", gradient_checkpointing=True)
    policy.build(toy_corpus(), None, seed=0)
    prompts, responses = _pairs(policy)
    policy.model.train()
    logp, _, mask = policy.token_logprobs(prompts, responses, "policy")
    (-(logp * mask).sum()).backward()
    assert all(p.grad is not None for p in policy.trainable_parameters())
    teacher, _, _ = policy.token_logprobs(prompts, responses, "teacher")
    assert torch.isfinite(teacher).all()


def test_full_finetune_with_nf4_is_refused():
    with pytest.raises(ValueError, match="finetune: lora"):
        Policy(tiny=TINY, finetune="full", quantization="nf4")


def test_unsupported_platform_fails_with_the_reason(monkeypatch):
    monkeypatch.setattr(bnb, "supported_torch_devices", {"cuda"})
    policy = Policy(tiny=TINY, quantization="nf4")
    with pytest.raises(QuantizationUnavailable, match="no 4-bit kernels for device type 'cpu'"):
        policy.build(toy_corpus(), None, seed=0)


def test_missing_bitsandbytes_fails_at_parse_time(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(QuantizationUnavailable, match="pip install bitsandbytes"):
        Policy(tiny=TINY, quantization="nf4")


@pytest.mark.slow
def test_fit_step_with_nf4_through_the_cli(tmp_path):
    from craft_pl.cli import main

    args = ["fit", "--config", str(CONFIGS / "webshop.yaml"), "--config", str(CONFIGS / "method" / "sdar.yaml"),
            "--config", str(CONFIGS / "smoke.yaml"), f"--trainer.default_root_dir={tmp_path / 'run'}",
            f"--model.policy.init_args.warm_start.cache_dir={tmp_path / 'cache'}",
            "--model.policy.init_args.quantization=nf4", "--trainer.max_epochs=1", "--data.val_tasks=2",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    cli = main(args)
    model = cli.model.policy.model
    assert count_4bit_layers(model) > 0
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(torch.count_nonzero(p) for p in lora_b)
    assert cli.trainer.global_step == 2  # one RL step x 2 mini-batches
    assert list((tmp_path / "run").rglob("*.ckpt"))
