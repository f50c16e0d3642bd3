"""Extra cost of SDAR's teacher pass: scoring time with the teacher over scoring time without, same batch.

Usage: OMP_NUM_THREADS=1 python -m benchmarks.teacher_pass_cost [--tasks 8] [--group 4] [--repeats 3]
Collects one RL step of WebShop rollouts (B x G episodes, tiny model), then times the no-grad scoring that every
method does (old + reference log-probs) and the teacher pass SDAR adds (privileged prompt, same response ids), three
ways, alternating: as craft_pl scores now (LM head on the response positions only, micro-batches of rows of similar
length, each prompt that rows share run once), the same without prompt sharing, and as it scored before (rows in
their order, logits at every position). Writes benchmarks/results/teacher_pass_cost.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import ENV_ARGS, SCORING_BATCH_SIZE, rollout_step
from benchmarks.machine import machine_record
import craft_pl.model.policy as policy_module
from craft_pl.model.logprobs import pad_pairs, response_scores, scores_from_logits
from craft_pl.rollout.engine import SamplingParams
from craft_pl.rollout.experience import with_privileged_contexts
from craft_pl.rollout.prompts import teacher_prompt


@contextlib.contextmanager
def prompt_sharing(share: bool):
    """Score as craft_pl does (``share``), or with one padded forward per micro-batch even where prompts repeat."""
    if share:
        yield
        return
    shared = policy_module.score_pairs

    def unshared(model, prompt_ids, response_ids, pad_id, *options, **named):
        return response_scores(model, pad_pairs(prompt_ids, response_ids, pad_id), *options, **named)
    policy_module.score_pairs = unshared
    try:
        yield
    finally:
        policy_module.score_pairs = shared


@torch.no_grad()
def previous_logprobs(policy, prompts: list[list[int]], responses: list[list[int]], which: str) -> None:
    """Scoring as it was before: micro-batches in row order, logits at every prompt and response position."""
    with policy.use(which) as model:
        for start in range(0, len(prompts), SCORING_BATCH_SIZE):
            batch = pad_pairs(prompts[start : start + SCORING_BATCH_SIZE], responses[start : start + SCORING_BATCH_SIZE],
                              policy.tokenizer.pad_token_id)
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, use_cache=False).logits
            width = batch.response_ids.shape[1]
            scores_from_logits(logits[:, batch.prompt_width - 1 : batch.prompt_width - 1 + width], batch.response_ids,
                               batch.response_mask, False, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(1)
    policy, env, batch, texts, tasks = rollout_step(args.tasks, args.group)
    texts = with_privileged_contexts(texts, tasks, env)
    max_new_tokens = SamplingParams().max_new_tokens
    keys = list(zip(batch.trajectory_ids.tolist(), batch.turn_index.tolist()))
    teacher_prompts = [teacher_prompt(policy, texts[k].prompt_parts, texts[k].privileged_context, max_new_tokens).ids
                       for k in keys]
    prompts, responses = batch.prompt_ids, batch.response_ids

    def now(share: bool):
        def plain() -> None:
            for which in ("policy", "reference"):  # old + reference log-probs
                with torch.no_grad(), prompt_sharing(share):
                    policy.token_logprobs(prompts, responses, which, micro_batch_size=SCORING_BATCH_SIZE)

        def teacher() -> None:
            with torch.no_grad(), prompt_sharing(share):
                policy.token_logprobs(teacher_prompts, responses, "teacher", micro_batch_size=SCORING_BATCH_SIZE)
        return plain, teacher

    variants = {
        "now": now(True),
        "without_prompt_sharing": now(False),
        "previous": (lambda: [previous_logprobs(policy, prompts, responses, w) for w in ("policy", "reference")],
                     lambda: previous_logprobs(policy, teacher_prompts, responses, "teacher")),
    }
    seconds: dict[str, dict[str, list[float]]] = {name: {"plain": [], "teacher": []} for name in variants}
    for repeat in range(args.repeats):
        for name in list(variants)[:: 1 if repeat % 2 == 0 else -1]:
            for part, fn in zip(("plain", "teacher"), variants[name]):
                started = time.perf_counter()
                fn()
                seconds[name][part].append(time.perf_counter() - started)
    summary = {}
    for name, parts in seconds.items():
        plain, teacher = statistics.median(parts["plain"]), statistics.median(parts["teacher"])
        summary[name] = {"scoring_without_teacher_s": round(plain, 3), "teacher_pass_s": round(teacher, 3),
                         "scoring_with_teacher_over_without": round((plain + teacher) / plain, 2),
                         "teacher_pass_over_one_plain_pass": round(teacher / (plain / 2), 2)}
    record = {
        "command": "OMP_NUM_THREADS=1 python -m benchmarks.teacher_pass_cost",
        "rows": batch.num_rows,
        "mean_student_prompt_tokens": round(sum(map(len, prompts)) / batch.num_rows, 1),
        "mean_teacher_prompt_tokens": round(sum(map(len, teacher_prompts)) / batch.num_rows, 1),
        "mean_response_tokens": round(sum(map(len, responses)) / batch.num_rows, 1),
        "distinct_student_prompts": len({tuple(p) for p in prompts}),
        "privileged": ENV_ARGS["privileged"],
        **summary["now"],
        "variants": summary,
        "speedup_over_previous": {
            "scoring_without_teacher": round(summary["previous"]["scoring_without_teacher_s"]
                                             / summary["now"]["scoring_without_teacher_s"], 2),
            "teacher_pass": round(summary["previous"]["teacher_pass_s"] / summary["now"]["teacher_pass_s"], 2),
            "scoring_with_teacher_now_over_without_teacher_before": round(
                (summary["now"]["scoring_without_teacher_s"] + summary["now"]["teacher_pass_s"])
                / summary["previous"]["scoring_without_teacher_s"], 2),
        },
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "machine_record": machine_record(),
    }
    out = Path(__file__).parent / "results" / "teacher_pass_cost.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    print("\n| scoring | old + reference (s) | teacher (s) | with / without |\n|---|---|---|---|")
    for name, values in summary.items():
        print(f"| {name} | {values['scoring_without_teacher_s']} | {values['teacher_pass_s']} | "
              f"{values['scoring_with_teacher_over_without']} |")


if __name__ == "__main__":
    main()
