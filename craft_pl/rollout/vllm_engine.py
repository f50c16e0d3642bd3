"""``VLLMEngine``: rollouts with vLLM (optional extra ``craft-pl[vllm]``, CUDA GPUs only), LoRA adapter synced.

UNTESTED: written without a GPU; its tests are GPU-marked and have not run. The HF engine is the tested default.

- The engine holds its own copy of the base model (from ``Policy.model_name``) next to the training copy, with
  ``enable_lora``; the policy adapter is pushed to it as a new ``LoRARequest`` whenever the policy's adapter version
  moved, i.e. after every optimizer step (``Policy.after_optimizer_step`` bumps it).
- Every push is **verified**: the engine's log-probs of a fixed probe sequence must match the training model's
  (same adapter) within ``verify_tolerance``; a mismatch means the engine serves a stale or wrong adapter and raises
  ``StaleEngineError`` (verl #7495: a silent stale adapter looks like slow learning).
- Log-probs returned are those of the distribution that sampled (``logprobs_mode="processed_logprobs"``: after
  temperature / top-p), like ``HFEngine``; each request's seed is drawn from the rollout generator.
"""

from __future__ import annotations

import importlib.util
import itertools
import tempfile
from pathlib import Path

import torch

from craft_pl.rollout.engine import DEFAULT_STOP_STRINGS, Generation, GenerationEngine, SamplingParams
from craft_pl.model.logprobs import pad_pairs, response_scores

ADAPTER_VERSION = "_craft_adapter_version"


class StaleEngineError(RuntimeError):
    """vLLM does not serve the policy's current adapter."""


def require_vllm() -> None:
    """Parse-time checks: the extra is installed and a CUDA GPU is visible; the message says how to fix it."""
    if importlib.util.find_spec("vllm") is None:
        raise ValueError("data.engine VLLMEngine needs vLLM: `pip install 'craft-pl[vllm]'` on a CUDA machine, "
                         "or use the default engine (craft_pl.rollout.engine.HFEngine)")
    if not torch.cuda.is_available():
        raise ValueError("data.engine VLLMEngine runs on CUDA GPUs only and none is visible; on CPU use the default "
                         "engine (craft_pl.rollout.engine.HFEngine)")


class VLLMEngine(GenerationEngine):
    """vLLM generation behind the ``GenerationEngine`` interface, with verified LoRA adapter sync."""

    def __init__(
        self,
        gpu_memory_utilization: float = 0.35,
        max_model_len: int = 8192,
        max_lora_rank: int = 64,
        dtype: str = "bfloat16",
        enforce_eager: bool = False,
        stop_strings: list[str] | None = None,
        verify_tolerance: float = 0.05,
        probe_tokens: int = 16,
    ) -> None:
        """
        Args:
            gpu_memory_utilization: Share of the GPU vLLM may take (weights + KV cache); the trainer needs the rest.
            max_model_len: Longest prompt + response vLLM schedules.
            max_lora_rank: Largest LoRA rank vLLM reserves room for (>= policy.lora_rank).
            dtype: vLLM's weight dtype.
            enforce_eager: Skip CUDA graphs (less memory, slower).
            stop_strings: Stop once the response ends with one of these, kept in the output (null = the
                environment's stop strings).
            verify_tolerance: Largest mean |log-prob| difference on the probe between vLLM and the training model.
            probe_tokens: Length of the probe sequence used to verify each adapter push.
        """
        require_vllm()
        if not 0 < gpu_memory_utilization < 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1), got {gpu_memory_utilization}")
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.max_lora_rank = max_lora_rank
        self.dtype = dtype
        self.enforce_eager = enforce_eager
        self.stop_strings = stop_strings
        self.verify_tolerance = verify_tolerance
        self.probe_tokens = probe_tokens
        self._llm = None
        self._lora = None
        self._synced_version: int | None = None
        self._ids = itertools.count(1)
        self._adapter_dir = tempfile.TemporaryDirectory(prefix="craft_pl_vllm_")

    # ------------------------------------------------------------------ engine and adapter
    def _engine(self, model):
        if self._llm is None:
            from vllm import LLM

            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            self._llm = LLM(model=base.config._name_or_path, enable_lora=True, max_lora_rank=self.max_lora_rank,
                            gpu_memory_utilization=self.gpu_memory_utilization, max_model_len=self.max_model_len,
                            dtype=self.dtype, enforce_eager=self.enforce_eager, logprobs_mode="processed_logprobs")
        return self._llm

    def sync_adapter(self, model, tokenizer) -> None:
        """Push the policy adapter when its version moved, then verify that vLLM serves it."""
        version = getattr(model, ADAPTER_VERSION, 0)
        if self._synced_version == version and self._lora is not None:
            return
        from vllm.lora.request import LoRARequest

        path = Path(self._adapter_dir.name) / f"v{version}"
        model.save_pretrained(str(path), selected_adapters=["policy"])
        adapter_path = path / "policy" if (path / "policy").exists() else path
        self._lora = LoRARequest(f"policy-v{version}", next(self._ids), str(adapter_path))
        self._synced_version = version
        self.verify(model, tokenizer)

    @torch.no_grad()
    def verify(self, model, tokenizer) -> float:
        """Mean |log-prob| gap on a fixed probe between vLLM (current LoRARequest) and the training model."""
        from vllm import SamplingParams as VllmSampling
        from vllm.inputs import TokensPrompt

        probe = list(range(10, 10 + self.probe_tokens))
        out = self._engine(model).generate([TokensPrompt(prompt_token_ids=probe)],
                                           VllmSampling(max_tokens=1, prompt_logprobs=0, temperature=1.0),
                                           lora_request=self._lora, use_tqdm=False)[0]
        engine_logp = torch.tensor([next(iter(d.values())).logprob if d else 0.0
                                    for d in out.prompt_logprobs[1:]], dtype=torch.float32)
        batch = pad_pairs([probe[:1]], [probe[1:]], tokenizer.pad_token_id)
        was_training = model.training
        model.eval()
        try:
            trained_logp = response_scores(model, batch).logp[0].float().cpu()
        finally:
            model.train(was_training)
        gap = float((engine_logp - trained_logp).abs().mean())
        if not gap <= self.verify_tolerance:
            raise StaleEngineError(
                f"vLLM's log-probs differ from the policy's by {gap:.4f} (tolerance {self.verify_tolerance}) after "
                f"pushing adapter version {self._synced_version}: the engine serves a stale or wrong adapter"
            )
        return gap

    # ------------------------------------------------------------------ generation
    def generate(self, model, tokenizer, prompt_ids, sampling: SamplingParams, generator,
                 stop_strings=DEFAULT_STOP_STRINGS) -> list[Generation]:
        from vllm import SamplingParams as VllmSampling
        from vllm.inputs import TokensPrompt

        self.sync_adapter(model, tokenizer)
        stops = list(self.stop_strings if self.stop_strings is not None else stop_strings)
        seeds = torch.randint(0, 2**31 - 1, (len(prompt_ids),), generator=generator).tolist()
        params = [VllmSampling(temperature=sampling.temperature, top_p=sampling.top_p,
                               max_tokens=sampling.max_new_tokens, logprobs=0, seed=seed, stop=stops,
                               include_stop_str_in_output=True, stop_token_ids=[tokenizer.eos_token_id])
                  for seed in seeds]
        outputs = self._engine(model).generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params,
                                               lora_request=self._lora, use_tqdm=False)
        results = []
        for output in outputs:
            completion = output.outputs[0]
            token_ids = list(completion.token_ids)
            logprobs = [entry[token].logprob for entry, token in zip(completion.logprobs, token_ids)]
            results.append(Generation(token_ids, logprobs, completion.finish_reason == "stop"))
        return results
