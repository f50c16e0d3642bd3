"""craft_pl's GRPO step next to TRL's GRPOTrainer: same tiny model, same single-turn task, one thread each.

Usage: OMP_NUM_THREADS=1 python -m benchmarks.trl_side_by_side [--rounds 4] [--steps 8] [--warmup 2]
       OMP_NUM_THREADS=1 python -m benchmarks.trl_side_by_side --experiments [--rounds 3]
Needs TRL (the optional extra: ``pip install -e '.[trl]'``). Writes benchmarks/results/trl_side_by_side.json (the
comparison, or with ``--experiments`` its ``experiments`` key) and prints a table.

Both sides start each run from the same locally built tiny Qwen2 (random init, full fine-tuning) and see the same
prompts token for token: 4 prompts x G = 8 siblings x up to 32 new tokens (EOS is the only stop), one optimizer step
per rollout, GRPO with a k3 reference KL (beta 0.01), clip 0.2, token-mean loss, entropy bonus 0.001, AdamW, grad
clip 1. TRL runs with the settings that make its loss this one (``loss_type="dapo"``,
``use_bias_correction_kl=False``, ``num_iterations=1``, ``steps_per_generation=1``, no bf16, no gradient
checkpointing). craft_pl runs its real pieces (``Collector`` + ``HFEngine``, ``Policy.token_logprobs`` /
``token_scores``, ``Objective``) without Lightning, with the old log-probs taken from the training forward (an
on-policy step with one update). Every run is a fresh subprocess (its peak RSS is its own); rounds alternate the
order of the runs; the first ``--warmup`` steps of a run are discarded. Each round also runs craft_pl as it was
before the speed work (``before``: the decoding loop of that time, imported from git by ``benchmarks/before.py``, a
separate old-log-prob pass, logits at every position, no shared prompts) so that before and after are measured side
by side in one session.
``--experiments`` times craft_pl variants (``EXPERIMENTS``) against its default, alternating.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.machine import machine_record  # noqa: E402

ROWS_PER_PROMPT = 8
PROMPTS_PER_STEP = 4
MAX_NEW_TOKENS = 32
LEARNING_RATE = 1e-5
SEED = 0
RESULT = Path(__file__).parent / "results" / "trl_side_by_side.json"
SYLLABLES = ["ka", "lo", "mi", "ren", "sa", "tu", "vo", "zel", "pa", "dor", "qui", "ne", "bra", "fi", "gu", "sho"]


# ---------------------------------------------------------------------------------------------------- the task
def task_panel(size: int, seed: int) -> list[tuple[str, str]]:
    """``(prompt text, answer word)`` pairs: name the word that follows a given word in a list of twelve."""
    rng = random.Random(seed)
    words = sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(600)})
    panel = []
    for _ in range(size):
        listed = rng.sample(words, 12)
        k = rng.randrange(11)
        text = (f"Task: name the word that follows {listed[k]} in the list below, then stop.\n"
                f"List: {' '.join(listed)}\nAnswer:")
        panel.append((text, listed[k + 1]))
    return panel


def build_model(directory: Path) -> int:
    """The tiny Qwen2 (craft_pl's default shape) and a BPE tokenizer trained on the task's text, saved for both
    sides; returns the parameter count."""
    from craft_pl.model.tiny import TinyModelSpec, build_tiny_model, train_tokenizer

    corpus = [f"{text} {answer}" for text, answer in task_panel(2000, SEED + 1)]
    tokenizer = train_tokenizer(corpus, TinyModelSpec().vocab_size)
    model = build_tiny_model(TinyModelSpec(), tokenizer, seed=SEED)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def reward(text: str, answer: str) -> float:
    return float(answer in text.split()[:2])


# ---------------------------------------------------------------------------------------------------- craft_pl
def craft_worker(model_dir: str, steps: int, options: dict) -> dict:
    from craft_pl.batch import PromptParts, Task
    from craft_pl.envs.base import AgentEnv, StepResult
    from craft_pl.model import Policy
    from craft_pl.objective import Objective
    from craft_pl.rollout.collector import Collector
    from craft_pl.rollout.engine import HFEngine, SamplingParams
    from craft_pl.rollout.experience import rows_from_trajectories

    class NextWordEnv(AgentEnv):
        """One turn: the response is the answer (EOS ends it), reward 1 when its first words hold the answer."""

        stop_strings = ()

        def __init__(self) -> None:
            super().__init__(max_turns=1, invalid_action_penalty=0.0)

        def task_panel(self, split, size, seed):
            return [Task(f"next/{i}", "next", text, payload=answer)
                    for i, (text, answer) in enumerate(task_panel(size, seed))]

        @property
        def task_types(self):
            return ["next"]

        def start(self, task):
            self.task = task
            return ""

        def transition(self, action):
            won = action is not None and reward(action, self.task.payload) > 0
            return StepResult("", float(won), True, {"valid_action": action is not None, "won": won,
                                                     "score": float(won)})

        @property
        def admissible_actions(self):
            return []

        def parse_action(self, text):
            return text, True

        def prompt(self, task, history, observation, step_index):
            return PromptParts(preamble=task.instruction)

        def format_response(self, action):
            return action

        def make_expert(self):
            raise NotImplementedError

    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    before = options.get("before", False)
    apply_experiment(options)
    policy = Policy(model=model_dir, local_files_only=True, finetune="full", max_prompt_tokens=512)
    policy.build([], None, seed=SEED)
    if options.get("compile_model"):
        for module in (policy.model, policy.reference):
            module.forward = torch.compile(module.forward, dynamic=True)
    if before or options.get("previous_engine"):  # the decoding loop before shared prefills, taken from git
        from benchmarks.before import ENGINE_BEFORE_SHARED_PREFILL, module_at

        engine = module_at(ENGINE_BEFORE_SHARED_PREFILL, "craft_pl/rollout/engine.py").HFEngine()
    else:
        engine = HFEngine(sampler=options.get("sampler", "race"))
    if options.get("compile_decoding"):
        engine = CompiledDecoding(engine)
    objective = Objective(pg_coef=1.0, clip_ratio=0.2, entropy_coef=0.001, kl_coef=0.01, distill_coef=0.0)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=LEARNING_RATE)
    collector = Collector(NextWordEnv, history_length=0, env_step_timeout_s=0)
    tasks = NextWordEnv().task_panel("train", PROMPTS_PER_STEP * steps, SEED)
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS)
    generator = torch.Generator().manual_seed(SEED)
    steps_out = []
    for step in range(steps):
        phases = {}
        started = mark = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            phases[name] = phases.get(name, 0.0) + now - mark
            mark = now

        step_tasks = tasks[step * PROMPTS_PER_STEP : (step + 1) * PROMPTS_PER_STEP]
        trajectories = collector.run(step_tasks, ROWS_PER_PROMPT, policy, engine, sampling, generator)
        lap("generation")
        batch, _ = rows_from_trajectories(trajectories, 0.0)
        objective.prepare(batch)
        lap("rows_and_advantages")
        with torch.no_grad():
            if before:  # the separate old-log-prob pass the on-policy step no longer makes
                batch.old_logp, _, _ = policy.token_logprobs(batch.prompt_ids, batch.response_ids, "policy",
                                                             micro_batch_size=64)
            batch.ref_logp, _, _ = policy.token_logprobs(batch.prompt_ids, batch.response_ids, "reference",
                                                         micro_batch_size=64)
        lap("scoring")
        scores, _ = policy.token_scores(batch.prompt_ids, batch.response_ids, "policy", with_entropy=True,
                                        width=batch.response_mask.shape[1])
        if not before:
            batch.old_logp = scores.logp.detach()  # on-policy, one update: the old log-probs are this forward's
        loss, _ = objective.compose(objective.terms(batch, scores.logp, scores.entropy))
        lap("forward_and_loss")
        loss.backward()
        lap("backward")
        torch.nn.utils.clip_grad_norm_(policy.trainable_parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lap("optimizer")
        steps_out.append({"seconds": time.perf_counter() - started, "phases": phases,
                          "completion_tokens": int(batch.response_mask.sum()),
                          "prompt_tokens": sum(map(len, batch.prompt_ids)),
                          "reward_mean": float(batch.rewards.mean())})
    return {"steps": steps_out, "prompt_ids": [policy.encode_prompt(t.instruction) for t in tasks[:2]]}


def apply_experiment(options: dict) -> None:
    """Swap in the variants the options name (monkeypatches inside this worker process only)."""
    import craft_pl.model.logprobs as logprobs
    import craft_pl.model.policy as policy_module
    import craft_pl.rollout.kv_cache as kv_cache

    if options.get("before"):  # logits at every position, as response_scores computed them before
        def full_logit_scores(model, batch, with_entropy=False, top_k=0, *options):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, use_cache=False).logits
            width = batch.response_ids.shape[1]
            return logprobs.scores_from_logits(logits[:, batch.prompt_width - 1 : batch.prompt_width - 1 + width],
                                               batch.response_ids, batch.response_mask, with_entropy, top_k, *options)
        logprobs.response_scores = full_logit_scores
    if options.get("before") or options.get("unshared_prompts"):  # one padded forward even where prompts repeat
        def unshared_scores(model, prompt_ids, response_ids, pad_id, *options, **named):
            return logprobs.response_scores(model, logprobs.pad_pairs(prompt_ids, response_ids, pad_id), *options,
                                            **named)
        policy_module.score_pairs = unshared_scores
    if options.get("dynamic_cache"):  # the KV cache grows by concatenation (no preallocated buffers)
        kv_cache.is_plain = lambda cache: False


class CompiledDecoding:
    """An engine whose model forward is ``torch.compile``d (dynamic shapes) for the decoding loop only."""

    def __init__(self, engine) -> None:
        self.engine, self.model, self.compiled = engine, None, None

    def generate(self, model, *args, **kwargs):
        if self.model is not model:
            forward = torch.compile(model.forward, dynamic=True)

            class Compiled(torch.nn.Module):
                def __init__(self) -> None:
                    super().__init__()
                    self.inner = model

                def forward(self, **inputs):
                    return forward(**inputs)

            self.model, self.compiled = model, Compiled()
        return self.engine.generate(self.compiled, *args, **kwargs)


EXPERIMENTS = {
    "previous_decoding_loop": {"previous_engine": True},
    "no_shared_prompts_in_scoring_and_training": {"unshared_prompts": True},
    "kv_cache_grown_by_concatenation": {"dynamic_cache": True},
    "inverse_cdf_sampler_one_draw_per_row": {"sampler": "inverse_cdf"},
    "compile_decoding": {"compile_decoding": True},
    "compile_model_all_forwards": {"compile_model": True},
}
"""craft_pl variants timed by ``--experiments`` against the default (``{}``)."""


# ---------------------------------------------------------------------------------------------------- TRL
def trl_worker(model_dir: str, steps: int, options: dict) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    panel = task_panel(PROMPTS_PER_STEP * steps, SEED)
    dataset = Dataset.from_dict({"prompt": [t for t, _ in panel], "answer": [a for _, a in panel]})
    completion_tokens: list[int] = []

    def next_word_reward(completions, answer, completion_ids, **kwargs):
        completion_tokens.append(sum(len(ids) for ids in completion_ids))
        return [reward(text, target) for text, target in zip(completions, answer)]

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, per_device_train_batch_size=PROMPTS_PER_STEP * ROWS_PER_PROMPT,
            num_generations=ROWS_PER_PROMPT, max_completion_length=MAX_NEW_TOKENS, temperature=1.0, top_p=1.0,
            top_k=0, learning_rate=LEARNING_RATE, lr_scheduler_type="constant", optim="adamw_torch",
            max_grad_norm=1.0, beta=0.01, epsilon=0.2, num_iterations=1, steps_per_generation=1,
            gradient_accumulation_steps=1, loss_type="dapo", use_bias_correction_kl=False, scale_rewards="group",
            entropy_coef=0.001, bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
            max_steps=steps, logging_steps=10**6, save_strategy="no", seed=SEED, shuffle_dataset=False,
            dataloader_num_workers=0, disable_dropout=True,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=next_word_reward, args=config, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[clock])
        clock.ends = [time.perf_counter()]
        trainer.train()
    seconds = [b - a for a, b in zip(clock.ends, clock.ends[1:])]
    prompt_tokens = [len(tokenizer(t).input_ids) for t, _ in panel]
    return {"steps": [{"seconds": s, "completion_tokens": n} for s, n in zip(seconds, completion_tokens)],
            "prompt_ids": [tokenizer(t).input_ids for t, _ in panel[:2]],
            "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens)}


# ---------------------------------------------------------------------------------------------------- harness
def run_worker(side: str, model_dir: str, steps: int, options: dict) -> dict:
    """One run in a fresh one-thread subprocess; its result plus its peak RSS."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "benchmarks.trl_side_by_side", "--worker", side, "--model-dir", model_dir,
               "--steps", str(steps), "--options", json.dumps(options)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{side} worker failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(run: dict, warmup: int) -> dict:
    kept = run["steps"][warmup:]
    seconds = statistics.median(s["seconds"] for s in kept)
    tokens = sum(s["completion_tokens"] for s in kept) / sum(s["seconds"] for s in kept)
    summary = {"median_step_s": round(seconds, 4), "completion_tokens_per_s": round(tokens, 1),
               "mean_completion_tokens": round(statistics.mean(s["completion_tokens"] for s in kept), 1),
               "peak_rss_mib": round(run["peak_rss_mib"], 1)}
    if "phases" in kept[0]:
        summary["median_phase_ms"] = {name: round(1000 * statistics.median(s["phases"][name] for s in kept), 1)
                                      for name in kept[0]["phases"]}
    return summary


def package_versions() -> dict:
    """``pip freeze`` lines of the two packages compared and what they run on (craft_pl is an editable install:
    its version and commit)."""
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True).stdout.splitlines()
    wanted = ("trl", "torch", "transformers", "accelerate", "datasets")
    versions = {line.split("==")[0]: line for line in frozen if line.split("==")[0].lower() in wanted}
    editable = [line for line in frozen if "craft-pl" in line.lower()]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    versions["craft-pl"] = f"{editable[0] if editable else 'craft-pl (not installed)'} at commit {commit or '?'} " \
                           "plus the working tree"
    return versions


SIDES = {"craft": ("craft", {}), "trl": ("trl", {}), "craft_before": ("craft", {"before": True})}
"""Side name -> (worker, options): craft_pl now, TRL, and craft_pl as it ran before the speed work."""


def compare(directory: str, args, parameters: int) -> dict:
    """Rounds of craft_pl (now), TRL and craft_pl (before), in an order that rotates each round."""
    rounds = []
    for number in range(args.rounds):
        order = list(SIDES)[number % 3 :] + list(SIDES)[: number % 3]
        runs = {side: run_worker(SIDES[side][0], directory, args.steps, SIDES[side][1]) for side in order}
        if runs["craft"]["prompt_ids"] != runs["trl"]["prompt_ids"]:
            raise RuntimeError("the two sides tokenized the prompts differently")
        summary = {side: summarise(runs[side], args.warmup) for side in SIDES}
        summary["ratio"] = round(summary["craft"]["median_step_s"] / summary["trl"]["median_step_s"], 3)
        summary["ratio_before"] = round(summary["craft_before"]["median_step_s"] / summary["trl"]["median_step_s"], 3)
        summary["order"] = order
        rounds.append(summary)
        print(f"round {number}: craft_pl {summary['craft']['median_step_s'] * 1000:.0f} ms, TRL "
              f"{summary['trl']['median_step_s'] * 1000:.0f} ms, craft_pl before "
              f"{summary['craft_before']['median_step_s'] * 1000:.0f} ms; ratio {summary['ratio']} "
              f"(before {summary['ratio_before']})", flush=True)

    def median(side: str, key: str) -> float:
        return round(statistics.median(r[side][key] for r in rounds), 4)

    def phases(side: str) -> dict:
        names = rounds[0][side]["median_phase_ms"]
        return {name: round(statistics.median(r[side]["median_phase_ms"][name] for r in rounds), 1) for name in names}

    return {
        "command": "OMP_NUM_THREADS=1 python -m benchmarks.trl_side_by_side",
        "median_step_time_ratio": round(statistics.median(r["ratio"] for r in rounds), 3),
        "median_step_time_ratio_before": round(statistics.median(r["ratio_before"] for r in rounds), 3),
        "craft_pl_median_step_s": median("craft", "median_step_s"),
        "trl_median_step_s": median("trl", "median_step_s"),
        "craft_pl_before_median_step_s": median("craft_before", "median_step_s"),
        "completion_tokens_per_s": {side: median(side, "completion_tokens_per_s") for side in SIDES},
        "peak_rss_mib": {side: median(side, "peak_rss_mib") for side in SIDES},
        "craft_pl_median_phase_ms": phases("craft"),
        "craft_pl_before_median_phase_ms": phases("craft_before"),
        "settings": {"model": "tiny Qwen2 (craft_pl TinyModelSpec defaults), random init, float32, full fine-tuning",
                     "parameters": parameters, "prompts_per_step": PROMPTS_PER_STEP, "group_size": ROWS_PER_PROMPT,
                     "max_new_tokens": MAX_NEW_TOKENS, "stop": "EOS only", "learning_rate": LEARNING_RATE,
                     "kl_beta": 0.01, "clip": 0.2, "entropy_coef": 0.001, "grad_clip": 1.0, "threads_per_process": 1,
                     "rounds": args.rounds, "steps_per_run": args.steps, "warmup_steps_discarded": args.warmup,
                     "craft_pl_before": "the decoding loop of commit e092456 (before shared prefills, from git), "
                                        "separate old-log-prob pass, logits at every position, no shared prompts"},
        "rounds": rounds,
        "packages": package_versions(),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        "machine_record": machine_record(),
    }


def experiments(directory: str, args) -> dict:
    """Each variant of ``EXPERIMENTS`` against craft_pl's default, alternating, ``args.rounds`` rounds."""
    record = {}
    for name, options in EXPERIMENTS.items():
        if args.only and name not in args.only:
            continue
        ratios, default_ms, variant_ms, first_s = [], [], [], []
        for number in range(args.rounds):
            runs = {}
            for side in (["default", "variant"] if number % 2 == 0 else ["variant", "default"]):
                runs[side] = run_worker("craft", directory, args.steps, options if side == "variant" else {})
            summary = {side: summarise(run, args.warmup) for side, run in runs.items()}
            default_ms.append(summary["default"]["median_step_s"] * 1000)
            variant_ms.append(summary["variant"]["median_step_s"] * 1000)
            ratios.append(variant_ms[-1] / default_ms[-1])
            first_s.append(runs["variant"]["steps"][0]["seconds"])
        record[name] = {"options": options, "default_step_ms": round(statistics.median(default_ms), 1),
                        "variant_step_ms": round(statistics.median(variant_ms), 1),
                        "variant_over_default": round(statistics.median(ratios), 3),
                        "variant_first_step_s": round(statistics.median(first_s), 2), "rounds": args.rounds}
        print(f"{name}: {record[name]}", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--experiments", action="store_true", help="time craft_pl variants instead")
    parser.add_argument("--only", nargs="+", default=None, help="with --experiments: these variants only (the "
                        "others keep their recorded rows)")
    parser.add_argument("--worker", choices=["craft", "trl"])
    parser.add_argument("--model-dir")
    parser.add_argument("--options", default="{}")
    args = parser.parse_args()
    if args.worker:
        result = (craft_worker if args.worker == "craft" else trl_worker)(args.model_dir, args.steps,
                                                                           json.loads(args.options))
        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    if not args.experiments and importlib.util.find_spec("trl") is None:
        raise SystemExit("TRL is not installed: pip install -e '.[trl]' (or --experiments for craft_pl variants only)")
    previous = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    with tempfile.TemporaryDirectory() as directory:
        parameters = build_model(Path(directory))
        if args.experiments:
            record = {**previous, "experiments": {
                **previous.get("experiments", {}),
                "command": "OMP_NUM_THREADS=1 python -m benchmarks.trl_side_by_side --experiments",
                "steps_per_run": args.steps, "warmup_steps_discarded": args.warmup,
                "note": "variant_over_default: median over rounds of (variant median step / default median step), "
                        "each round one fresh run of each, alternating; first_step includes any compiling",
                **experiments(directory, args)}}
        else:
            stale = ("machine_state", "load_average_1_5_15_min_at_end")  # notes about an earlier measurement
            record = {**{k: v for k, v in previous.items() if k not in stale}, **compare(directory, args, parameters)}
    RESULT.write_text(json.dumps(record, indent=2) + "\n")
    print_table(record, args.experiments)


def print_table(record: dict, experiments_only: bool) -> None:
    if experiments_only:
        print("\n| craft_pl variant | default (ms) | variant (ms) | variant / default | first step (s) |\n|---|---|---|---|---|")
        for name, row in record["experiments"].items():
            if isinstance(row, dict):
                print(f"| {name} | {row['default_step_ms']} | {row['variant_step_ms']} | {row['variant_over_default']} "
                      f"| {row['variant_first_step_s']} |")
        return
    print("\n| side | median step (ms) | completion tokens/s | peak RSS (MiB) |\n|---|---|---|---|")
    for side, label in (("craft", "craft_pl"), ("trl", "TRL GRPOTrainer"), ("craft_before", "craft_pl before")):
        step = record["craft_pl_median_step_s" if side == "craft" else "trl_median_step_s" if side == "trl"
                      else "craft_pl_before_median_step_s"]
        print(f"| {label} | {step * 1000:.0f} | {record['completion_tokens_per_s'][side]} | "
              f"{record['peak_rss_mib'][side]} |")
    print(f"\nratio craft_pl / TRL: {record['median_step_time_ratio']} (before: "
          f"{record['median_step_time_ratio_before']})\ncraft_pl phases (ms): {record['craft_pl_median_phase_ms']}")


if __name__ == "__main__":
    main()
