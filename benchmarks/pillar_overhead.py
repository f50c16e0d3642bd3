"""CRAFT's extra compute: the loss work of one RL step with CRAFT's pillars over the same with SDAR, same batch;
and Pillar 1's ``prepare`` time at the paper's scale (B=16, G=8, 15 turns x 64 tokens).

Usage: python -m benchmarks.pillar_overhead [--repeats 5]
Loss work = objective + pillar ``prepare`` and every mini-batch's forward, loss, backward and optimizer step
(rollout and scoring are shared by both methods and excluded). Writes benchmarks/results/pillar_overhead.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import rollout_step, score_rows
from craft_pl.loss import LossRecipe
from craft_pl.objective import Objective
from craft_pl.pillars.controller import AsymmetricController
from craft_pl.pillars.cti import CounterfactualTokenImportance
from craft_pl.pillars.polar_kl import PolarisedKL
from craft_pl.model import Policy
from craft_pl.batch import RolloutBatch


def loss_work(policy: Policy, batch: RolloutBatch, pillars: list, mini_batches: int = 4) -> float:
    """Seconds for prepare + every mini-batch update of one RL step, through the loss recipe training uses."""
    policy, batch = copy.deepcopy(policy), copy.deepcopy(batch)
    recipe = LossRecipe(Objective(distill_coef=0.01, kl_coef=0.01, gate_beta=5.0), pillars)
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-4)
    started = time.perf_counter()
    recipe.prepare(batch)
    for index in torch.tensor_split(torch.arange(batch.num_rows), mini_batches):
        mini = batch.select(index)
        mini.num_tokens = int(mini.response_mask.sum())
        scores, _ = policy.token_scores(mini.prompt_ids, mini.response_ids, with_entropy=True,
                                        top_k=recipe.logits_top_k, width=mini.response_mask.shape[1])
        loss = recipe.loss(mini, scores.logp, scores.entropy, logits=scores).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def synthetic_step(groups: int, group_size: int, turns: int, tokens: int) -> RolloutBatch:
    """A scored batch of the given shape with random log-probs and rewards (for the ``prepare`` timing)."""
    generator = torch.Generator().manual_seed(0)
    rows = groups * group_size * turns
    group_ids = torch.arange(groups).repeat_interleave(group_size * turns)
    trajectory_ids = torch.arange(groups * group_size).repeat_interleave(turns)
    mask = torch.ones(rows, tokens, dtype=torch.bool)
    logp = -torch.rand(rows, tokens, generator=generator) * 3
    return RolloutBatch(
        prompt_ids=[[0]] * rows, response_ids=[[0] * tokens] * rows, response_mask=mask,
        group_ids=group_ids, trajectory_ids=trajectory_ids, turn_index=torch.arange(turns).repeat(groups * group_size),
        rewards=torch.zeros(rows), valid_action=torch.ones(rows, dtype=torch.bool), anchor_ids=torch.arange(rows),
        sampling_logp=logp, old_logp=logp,
        teacher_logp=logp + torch.randn(rows, tokens, generator=generator),
        advantages=torch.randn(groups * group_size, generator=generator).repeat_interleave(turns),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    policy, env, batch, texts, tasks = rollout_step()
    score_rows(policy, env, batch, texts, tasks)

    def craft():
        controller = AsymmetricController(target=0.2)
        controller.state.update(distill=0.02, kl=0.005, base={"distill": 0.01, "kl": 0.01})
        return [CounterfactualTokenImportance(), controller, PolarisedKL()]

    sdar_times, craft_times = [], []
    for _ in range(args.repeats):  # interleaved so drifts in machine load hit both alike
        sdar_times.append(loss_work(policy, batch, []))
        craft_times.append(loss_work(policy, batch, craft()))
    big = synthetic_step(16, 8, 15, 64)
    pillar = CounterfactualTokenImportance()
    prepare_times = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        pillar.prepare(big)
        prepare_times.append(time.perf_counter() - started)
    record = {
        "command": "python -m benchmarks.pillar_overhead",
        "rows": batch.num_rows,
        "sdar_loss_work_s": round(statistics.median(sdar_times), 4),
        "craft_loss_work_s": round(statistics.median(craft_times), 4),
        "craft_over_sdar": round(statistics.median(craft_times) / statistics.median(sdar_times), 3),
        "cti_prepare_s_B16_G8_15x64": round(statistics.median(prepare_times), 4),
        "torch_threads": torch.get_num_threads(),
    }
    out = Path(__file__).parent / "results" / "pillar_overhead.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
