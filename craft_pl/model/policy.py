"""The policy: a causal LM, its tokenizer, its trainable adapter and its reference.

``Policy`` is configured at parse time (nothing loads) and built in ``CraftModule.configure_model`` with
``build()``. The reference policy is the base weights with the adapter disabled (LoRA) or a frozen copy of the base
(full fine-tuning); the base is the warm-started model when a warm start is configured.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path
from typing import Iterator, Literal

import torch

from craft_pl.distributed import gather_for_inference, shard_for_training
from craft_pl.model.dagger import clone_on_student_states
from craft_pl.model.loading import BUILTIN_TINY, DTYPES, load_model, load_tokenizer
from craft_pl.model.logprobs import ResponseScores, score_pairs
from craft_pl.model.quantization import (
    keep_training_layout,
    quantize_linear_layers,
    require_bitsandbytes_installed,
    require_nf4_support,
)
from craft_pl.model.tiny import TinyModelSpec
from craft_pl.model.warm_start import WarmStart, cache_key, warm_start_weights
from craft_pl.seeding import derive_seed

log = logging.getLogger(__name__)


class Policy(torch.nn.Module):
    """A Hugging Face causal LM (or the built-in tiny model) with a trainable ``policy`` adapter."""

    def __init__(
        self,
        model: str = BUILTIN_TINY,
        tiny: TinyModelSpec = TinyModelSpec(),
        local_files_only: bool = False,
        finetune: Literal["lora", "full"] = "lora",
        lora_rank: int = 16,
        lora_alpha: float = 32.0,
        lora_dropout: float = 0.0,
        lora_target_modules: list[str] | None = None,
        dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        use_chat_template: bool = True,
        max_prompt_tokens: int = 1024,
        warm_start: WarmStart | None = None,
        teacher: Literal["policy", "ema", "frozen"] = "policy",
        teacher_ema_decay: float = 0.99,
        privileged_demo_fraction: float = 0.5,
        recovery_demo_rate: float = 0.0,
        recovery_demo_run: float = 0.0,
        quantization: Literal["nf4"] | None = None,
        compute_dtype: Literal["float32", "bfloat16", "float16"] | None = None,
        double_quant: bool = True,
        gradient_checkpointing: bool = False,
    ) -> None:
        """
        Args:
            model: ``builtin:tiny`` (no download), a Hugging Face hub name, or a local directory.
            tiny: Shape of the built-in tiny model (used only when ``model`` is ``builtin:tiny``).
            local_files_only: Never touch the network when loading a hub model (it must be cached).
            finetune: ``lora`` trains a peft adapter named ``policy``; ``full`` trains every weight.
            lora_rank: LoRA rank r.
            lora_alpha: LoRA scaling alpha.
            lora_dropout: Dropout on the LoRA branch.
            lora_target_modules: Module names to adapt (default: every attention and MLP projection).
            dtype: Parameter dtype of the loaded model.
            use_chat_template: Wrap prompts in the tokenizer's chat template when it has one.
            max_prompt_tokens: Prompts longer than this are cut from the left (history goes first).
            warm_start: Behaviour-clone the expert before RL; the result is the base (and reference) model.
            teacher: Weights of the privileged teacher: ``policy`` (the current policy adapter, as SDAR), ``ema``
                (a ``teacher`` LoRA adapter tracking the policy adapter as an EMA) or ``frozen`` (that adapter
                kept at its initial weights).
            teacher_ema_decay: EMA decay of the ``ema`` teacher per optimizer step, in [0, 1).
            privileged_demo_fraction: Share of warm-start demonstrations that carry the privileged context in their
                prompt, so the model learns to use it (0 = none).
            recovery_demo_rate: Share of warm-start demonstration turns that execute a perturbed action (a different
                admissible one, or an invalid near-miss) while the row keeps the expert's label, so the later rows
                teach recovery from states the expert alone never reaches (DART-style noise; 0 = the expert alone).
            recovery_demo_run: Probability that a perturbed invalid turn is followed by another invalid one, so the
                rows show the way out of several invalid replies in a row (0 = single invalid turns, as before).
                Measured on ALFWorld's explorer warm start (0.6): worse, validity 0.70 -> 0.53 (see
                ``benchmarks/results/alfworld_warm_start_diagnosis.md``).
            quantization: ``nf4`` keeps the frozen base weights in 4-bit NF4 (bitsandbytes; QLoRA: needs
                ``finetune: lora``); null keeps them in ``dtype``.
            compute_dtype: Dtype the 4-bit weights are de-quantized to for each matmul (null = ``dtype``).
            double_quant: Also quantize the NF4 block scales (QLoRA's double quantization, ~0.4 bit/param saved).
            gradient_checkpointing: Recompute each block's activations in the backward pass (less memory, slower).
        """
        super().__init__()
        if model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
            raise ValueError(
                f"policy.model: local path {model!r} does not exist; give an existing directory with a "
                f"Hugging Face model, a hub name, or {BUILTIN_TINY!r}"
            )
        if lora_rank < 1:
            raise ValueError(f"policy.lora_rank must be >= 1, got {lora_rank}")
        if teacher != "policy" and finetune != "lora":
            raise ValueError(f"policy.teacher={teacher!r} needs policy.finetune='lora' (the teacher is a LoRA adapter)")
        if not 0 <= teacher_ema_decay < 1:
            raise ValueError(f"policy.teacher_ema_decay must be in [0, 1), got {teacher_ema_decay}")
        if not 0 <= privileged_demo_fraction <= 1:
            raise ValueError(f"policy.privileged_demo_fraction must be in [0, 1], got {privileged_demo_fraction}")
        if not 0 <= recovery_demo_rate < 1:
            raise ValueError(f"policy.recovery_demo_rate must be in [0, 1), got {recovery_demo_rate}; "
                             "it is the share of demonstration turns perturbed (0.1-0.2 is typical)")
        if not 0 <= recovery_demo_run < 1:
            raise ValueError(f"policy.recovery_demo_run must be in [0, 1), got {recovery_demo_run}; it is the "
                             "probability that an invalid perturbed turn is followed by another (0 = no runs)")
        if quantization is not None and finetune != "lora":
            raise ValueError(
                f"policy.quantization={quantization!r} freezes the base in 4 bits, which cannot be fine-tuned in full; "
                "set policy.finetune: lora (QLoRA) or policy.quantization: null"
            )
        if quantization is not None:
            require_bitsandbytes_installed()
        if max_prompt_tokens < 8:
            raise ValueError(f"policy.max_prompt_tokens must be >= 8, got {max_prompt_tokens}")
        self.model_name = str(Path(model).expanduser()) if model.startswith("~") else model
        self.tiny = tiny
        self.local_files_only = local_files_only
        self.finetune = finetune
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.lora_target_modules = lora_target_modules or [
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
        ]
        self.dtype_name = dtype
        self.use_chat_template = use_chat_template
        self.max_prompt_tokens = max_prompt_tokens
        self.warm_start = warm_start
        self.teacher = teacher
        self.teacher_ema_decay = teacher_ema_decay
        self.privileged_demo_fraction = privileged_demo_fraction
        self.recovery_demo_rate = recovery_demo_rate
        self.recovery_demo_run = recovery_demo_run
        self.quantization = quantization
        self.compute_dtype_name = compute_dtype or dtype
        self.double_quant = double_quant
        self.gradient_checkpointing = gradient_checkpointing
        self.model: torch.nn.Module | None = None
        self.reference: torch.nn.Module | None = None
        self.tokenizer = None
        self.warm_start_losses: list[float] = []

    # ------------------------------------------------------------------ building
    @property
    def is_built(self) -> bool:
        return self.model is not None

    @property
    def needs_corpus(self) -> bool:
        """The built-in tokenizer is trained on environment text."""
        return self.model_name == BUILTIN_TINY

    def build(self, corpus: list[str], demonstrations: list[tuple[str, str]] | None, seed: int,
              device: torch.device | str | None = None, student_demonstrations=None) -> None:
        """Load or create tokenizer and model, warm-start them, then attach the adapter / reference.

        ``device`` is where the model will run; it matters only for 4-bit weights (checked for bitsandbytes support;
        a hub model is quantized straight onto it while loading); ``student_demonstrations`` is the data side's
        (``DataFacts``), for the warm start's ``student_episodes``."""
        if self.is_built:
            return
        device = torch.device(device or "cpu")
        if self.quantization is not None:
            require_nf4_support(device)
        self.tokenizer = load_tokenizer(self.model_name, self.tiny, corpus, self.local_files_only)
        quantize_while_loading = self.quantization == "nf4" and self.warm_start is None
        base = load_model(self.model_name, self.tiny, self.tokenizer, self.dtype_name, derive_seed(seed, "model_init"),
                          self.local_files_only, self.compute_dtype_name if quantize_while_loading else None,
                          self.double_quant, device)
        if self.warm_start is not None:
            if not demonstrations:
                raise ValueError("policy.warm_start is set but the environment produced no demonstrations")
            self._warm_start(base, demonstrations, seed, student_demonstrations)
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        if self.quantization == "nf4" and not getattr(base, "is_loaded_in_4bit", False):
            # built in memory (tiny model) or warm-started in full precision: quantize now, layer by layer
            quantize_linear_layers(base.to(device), DTYPES[self.compute_dtype_name], self.double_quant)
        keep_training_layout(base)
        if self.gradient_checkpointing:
            enable = getattr(base, "activation_checkpointing_enable", None)  # transformers >= 5.2x
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.finetune == "lora":
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=self.lora_rank,
                lora_alpha=self.lora_alpha,
                lora_dropout=self.lora_dropout,
                target_modules=self.lora_target_modules,
                bias="none",
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "adapter_init"))
                self.model = get_peft_model(base, config, adapter_name="policy")
            if self.teacher != "policy":
                self.model.add_adapter("teacher", config)
                self.model.set_adapter("policy")
                self._copy_adapter("policy", "teacher")
        else:
            self.reference = copy.deepcopy(base).eval()
            for parameter in base.parameters():
                parameter.requires_grad_(True)
            self.model = base

    def _warm_start(self, base: torch.nn.Module, demonstrations: list[tuple[str, str]], seed: int,
                    student_demonstrations=None) -> None:
        rows = [(self.encode_prompt(p), self.encode_response(r)) for p, r in demonstrations]
        # the float kernels too: the same settings give other weights on another torch or another CPU instruction set
        # (AVX-512 vs AVX2: benchmarks/results/teacher_investigation.md), so such a cache must miss, not be shared
        description = (f"{self.model_name}|{self.tiny}|{self.dtype_name}|{sum(p.numel() for p in base.parameters())}"
                       f"|torch {torch.__version__}|cpu {torch.backends.cpu.get_cpu_capability()}")
        key = cache_key(self.warm_start, description, self.tokenizer.get_vocab(), rows, seed)
        generator = torch.Generator().manual_seed(derive_seed(seed, "warm_start"))
        self.warm_start_losses = warm_start_weights(base, rows, self.warm_start, key, self.tokenizer.pad_token_id,
                                                    generator)
        if self.warm_start.student_episodes:
            self.warm_start_losses += clone_on_student_states(self, base, rows, key, description,
                                                              student_demonstrations, seed)

    # ------------------------------------------------------------------ teacher adapter
    def _adapter_pairs(self, source: str, target: str) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
        named = dict(self.model.named_parameters())
        pairs = []
        for name, parameter in named.items():
            if f".{source}." in name:
                pairs.append((parameter, named[name.replace(f".{source}.", f".{target}.")]))
        return pairs

    @torch.no_grad()
    def _copy_adapter(self, source: str, target: str) -> None:
        for src, dst in self._adapter_pairs(source, target):
            dst.copy_(src)
            dst.requires_grad_(False)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Move the ``ema`` teacher toward the policy adapter: teacher <- d * teacher + (1 - d) * policy; count the
        adapter's version (an engine with its own copy of the weights, e.g. vLLM, re-syncs when it moves)."""
        setattr(self.model, "_craft_adapter_version", getattr(self.model, "_craft_adapter_version", 0) + 1)
        if self.teacher == "ema":
            for policy_weight, teacher_weight in self._adapter_pairs("policy", "teacher"):
                teacher_weight.lerp_(policy_weight, 1.0 - self.teacher_ema_decay)

    # ------------------------------------------------------------------ text <-> ids
    @property
    def max_context_tokens(self) -> int:
        """Longest sequence the model accepts."""
        return int(getattr(self.model.config, "max_position_embeddings", 4096))

    def encode_prompt(self, text: str, budget: int | None = None) -> list[int]:
        """Prompt ids (chat-templated when the tokenizer has a template), cut from the left to the budget."""
        if self.use_chat_template and getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=False
            )
        else:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return list(ids[-(budget or self.max_prompt_tokens) :])

    def encode_response(self, text: str) -> list[int]:
        """Response ids of a demonstration, ending with EOS."""
        return list(self.tokenizer(text, add_special_tokens=False).input_ids) + [self.tokenizer.eos_token_id]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    # ------------------------------------------------------------------ forward passes
    @contextlib.contextmanager
    def use(self, which: Literal["policy", "reference", "teacher"]) -> Iterator[torch.nn.Module]:
        """The module that computes ``which``: the adapted policy, the teacher adapter (when one exists), or the
        base with adapters off / the frozen copy."""
        if which == "policy" or (which == "teacher" and self.teacher == "policy"):
            yield self.model
        elif which == "teacher":
            self.model.set_adapter("teacher")
            try:
                yield self.model
            finally:
                self.model.set_adapter("policy")
                for _, teacher_weight in self._adapter_pairs("policy", "teacher"):
                    teacher_weight.requires_grad_(False)
        elif self.reference is not None:
            yield self.reference
        else:
            with self.model.disable_adapter():
                yield self.model

    def token_logprobs(
        self,
        prompt_ids: list[list[int]],
        response_ids: list[list[int]],
        which: Literal["policy", "reference", "teacher"] = "policy",
        with_entropy: bool = False,
        micro_batch_size: int | None = None,
        width: int | None = None,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Per-token log-probs ``[rows, R]`` of responses given prompts, entropy (optional) and response mask.

        ``R`` is ``width`` when given (e.g. the width of the step's stored tensors, which a mini-batch's own longest
        response may not reach), else the longest response. Rows are scored ``micro_batch_size`` at a time (rows of
        similar length together) and re-assembled in order; a prompt that several rows of a micro-batch share runs once
        (within ~1e-6 of one padded forward; not under activation checkpointing, whose layers keep no cache). Gradients flow when
        enabled by the caller. ``temperature``: the rollout temperature the log-probs are taken at (logits / T).
        """
        scores, mask = self.token_scores(prompt_ids, response_ids, which, with_entropy, 0, micro_batch_size, width,
                                         temperature=temperature)
        return scores.logp, scores.entropy, mask

    def token_scores(
        self,
        prompt_ids: list[list[int]],
        response_ids: list[list[int]],
        which: Literal["policy", "reference", "teacher"] = "policy",
        with_entropy: bool = False,
        top_k: int = 0,
        micro_batch_size: int | None = None,
        width: int | None = None,
        full_distribution: bool = False,
        temperature: float = 1.0,
    ) -> tuple[ResponseScores, torch.Tensor]:
        """Like ``token_logprobs`` with everything ``response_scores`` gives (top-k competing logits, or the whole
        next-token distribution ``log_probs [rows, R, vocab]``, when asked)."""
        rows = len(prompt_ids)
        size = micro_batch_size or rows
        longest = max(1, max(len(r) for r in response_ids))
        if width is not None and width < longest:
            raise ValueError(f"width {width} is shorter than the longest response ({longest} tokens)")
        width = width or longest
        order = restore = None  # several chunks: rows of similar length share one (least padding), order restored
        if size < rows:
            order = sorted(range(rows), key=lambda r: (len(prompt_ids[r]), prompt_ids[r], len(response_ids[r])))
            restore = torch.empty(rows, dtype=torch.long).index_copy_(0, torch.tensor(order), torch.arange(rows))
        chunks: list[ResponseScores] = []
        with self.use(which) as module:
            if torch.is_grad_enabled():  # several processes: whole parameters for no-grad phases, shards to train
                shard_for_training(module)
            else:
                gather_for_inference(module)
            for start in range(0, rows, size):
                chunk = order[start : start + size] if order else range(start, min(rows, start + size))
                chunks.append(score_pairs(module, [prompt_ids[r] for r in chunk], [response_ids[r] for r in chunk],
                                          self.tokenizer.pad_token_id, with_entropy, top_k, full_distribution,
                                          temperature))

        def joined(name: str) -> torch.Tensor | None:
            parts = [getattr(chunk, name) for chunk in chunks]
            if parts[0] is None:
                return None
            pad = [0, 0] * (parts[0].dim() - 2)
            joined = torch.cat([torch.nn.functional.pad(p, pad + [0, width - p.shape[1]]) for p in parts])
            return joined if restore is None else joined.index_select(0, restore.to(joined.device))

        scores = ResponseScores(**{name: joined(name) for name in
                                   ("logp", "entropy", "sampled_logit", "top_logits", "top_ids", "log_probs")})
        mask = torch.zeros(rows, width, dtype=torch.bool)
        for row, response in enumerate(response_ids):
            mask[row, : len(response)] = True
        return scores, mask.to(scores.logp.device)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]
