"""VLLMEngine: parse-time refusal without the extra or a GPU (CPU); round trip with adapter sync (GPU-marked)."""

from pathlib import Path

import pytest
import torch

from craft_pl.cli import main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
HAS_VLLM_GPU = torch.cuda.is_available() and __import__("importlib").util.find_spec("vllm") is not None


@pytest.mark.skipif(HAS_VLLM_GPU, reason="vLLM and a GPU are present: nothing to refuse")
def test_vllm_without_the_extra_or_a_gpu_fails_at_parse_time_with_the_fix(capsys, monkeypatch):
    import craft_pl.model

    monkeypatch.setattr(craft_pl.model.Policy, "build", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "webshop.yaml"),
              "--data.engine=craft_pl.rollout.vllm_engine.VLLMEngine"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "pip install 'craft-pl[vllm]'" in err or "CUDA GPUs only" in err
    assert "HFEngine" in err


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_VLLM_GPU, reason="needs a CUDA GPU and the vllm extra")
def test_vllm_round_trip_with_verified_adapter_sync(tmp_path):  # pragma: no cover - GPU only, untested here
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from craft_pl.model import Policy
    from craft_pl.rollout.engine import SamplingParams
    from craft_pl.rollout.vllm_engine import StaleEngineError, VLLMEngine
    from craft_pl.model.tiny import train_tokenizer
    from tests.conftest import toy_corpus

    tokenizer = train_tokenizer(toy_corpus(), 300)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    policy = Policy(model=str(tmp_path / "model"), local_files_only=True, dtype="bfloat16", lora_rank=8)
    policy.build([], None, seed=0)
    policy.model.cuda()
    engine = VLLMEngine(gpu_memory_utilization=0.2, max_model_len=512, max_lora_rank=8, enforce_eager=True)
    prompts = [policy.encode_prompt("Task: choose apple\n")] * 4
    out = engine.generate(policy.model, policy.tokenizer, prompts, SamplingParams(1.0, 1.0, 8),
                          torch.Generator().manual_seed(0))
    assert len(out) == 4 and all(len(g.token_ids) == len(g.logprobs) > 0 for g in out)
    assert all(lp <= 0 for g in out for lp in g.logprobs)
    with torch.no_grad():  # an optimizer step's worth of change, then the engine must follow
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    policy.after_optimizer_step()
    engine.generate(policy.model, policy.tokenizer, prompts, SamplingParams(1.0, 1.0, 8), torch.Generator())
    assert engine._synced_version == 1
    with torch.no_grad():  # weights move without a version bump: the engine is stale and verify says so
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    with pytest.raises(StaleEngineError):
        engine.verify(policy.model, policy.tokenizer)
