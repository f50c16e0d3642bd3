"""Export: the trained policy in Hugging Face format reproduces its log-probs with plain transformers + peft."""

import json
import subprocess
import sys

import pytest
import torch

from craft_pl.cli import main
from tests.test_training_toy import TOY_ARGS

LOAD_WITHOUT_CRAFT_PL = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
out, prompt, response, text = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]

def logprobs(model):
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None])[:, 0].tolist()

base = AutoModelForCausalLM.from_pretrained(f"{out}/base").eval()
adapted = PeftModel.from_pretrained(base, f"{out}/adapter").eval()
merged = AutoModelForCausalLM.from_pretrained(f"{out}/merged").eval()
tokenizer = AutoTokenizer.from_pretrained(f"{out}/adapter")
assert not any(name.startswith("craft_pl") for name in sys.modules)
print(json.dumps({"adapter": logprobs(adapted), "merged": logprobs(merged),
                  "ids": tokenizer(text, add_special_tokens=False)["input_ids"]}))
"""


@pytest.mark.slow
def test_exported_policy_reproduces_its_logprobs_without_craft_pl(tmp_path):
    root = tmp_path / "fit"
    cli = main(["fit", *TOY_ARGS, "--trainer.max_epochs=1", f"--trainer.default_root_dir={root}",
                f"--model.policy.warm_start.cache_dir={tmp_path / 'cache'}"])
    (ckpt,) = root.rglob("*.ckpt")
    out = tmp_path / "export"
    subprocess.run([sys.executable, "-m", "craft_pl", "export", f"--ckpt_path={ckpt}", f"--output_dir={out}",
                    "--merged", "--trust_config_classes"],  # the toy environment lives in tests/, outside craft_pl
                   check=True, capture_output=True, text=True)
    assert set(json.loads((out / "export.json").read_text())["written"]) == {"adapter", "base", "merged"}

    policy = cli.model.policy.eval()
    text = "Task: choose apple\nObservation: options: apple brick\n"
    prompt = policy.encode_prompt(text)
    response = policy.encode_response("<think>ok</think><action>apple</action>")
    expected, _, _ = policy.token_logprobs([prompt], [response], "policy")
    loaded = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_CRAFT_PL, str(out), json.dumps(prompt),
                             json.dumps(response), text], check=True, capture_output=True, text=True)
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert result["adapter"] == pytest.approx(expected[0, : len(response)].tolist(), abs=1e-5)
    assert result["merged"] == pytest.approx(expected[0, : len(response)].tolist(), abs=1e-4)
    assert result["ids"] == policy.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_export_of_a_missing_checkpoint_fails_with_its_path(tmp_path):
    done = subprocess.run([sys.executable, "-m", "craft_pl", "export", f"--ckpt_path={tmp_path / 'no.ckpt'}",
                           f"--output_dir={tmp_path}"], capture_output=True, text=True)
    assert done.returncode == 2 and "no checkpoint at" in done.stderr
