"""Per-state CRAFT judged over every token the loss uses: ``ess_min`` and ``fallback`` on two exact models.

Usage: OMP_NUM_THREADS=1 python -m benchmarks.per_state_fallback [--groups 4000] [--seeds 0 1 2] [--sizes 4 8]

``per_state_credit.py`` scores the mean credit over the tokens with a *valid* per-state CTI. The loss acts on every
token: a token without n_min same-state siblings (or with ESS < ``ess_min``) gets the pillar's fallback, the plain
SDAR gate g >= 0 (``fallback: gate``) or no distillation (``fallback: none``, credit 0). Here the mean credit of
(s, t) is taken over *all* the tokens in state s at turn t, fallback included, and the score at t is the share of
the state mass d_t whose mean credit has the sign of the exact teacher effect e(s, t) (a state whose mean credit is
exactly 0 counts as wrong: the loss does nothing there). The pillar is the shipped per-state form
(``grouping: anchor``, ``cti_baseline: group_loo``, ``align: turn_token``, n_min = 2), crossed with ``ess_min`` in
{0, 1.5} and ``fallback`` in {gate, none}, on the benchmark's model (``default_mdp``) and on one whose goal state is
rare and barely helped by the teacher (``rare_goal_mdp``). Criterion (stated before the grid that uses it): the
largest mean over t of the min-over-seeds score, averaged over the two models, at the group size of the grid.
Appends its table to benchmarks/results/per_state_credit.md (run after ``per_state_credit``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.per_state_credit import run_pillar
from benchmarks.tabular_mdp import (
    ExactValues,
    TabularMDP,
    default_mdp,
    exact,
    rare_goal_mdp,
    rollout_batch,
    sample_groups,
)
from craft_pl.batch import RolloutBatch

RESULT = Path(__file__).resolve().parent / "results" / "per_state_credit.md"
MODELS = {"default": default_mdp, "rare goal": rare_goal_mdp}
PAIRS = [(1.5, "gate"), (1.5, "none"), (0.0, "gate"), (0.0, "none")]
"""(ess_min, fallback); the first is the pillar's default."""
SECTION = "## Every token the loss uses: `ess_min` and `fallback`"


@dataclass
class Sample:
    """One seeded sample of student groups on a model, with the model's exact values (shared by every pair)."""

    truth: ExactValues
    batch: RolloutBatch
    states: torch.Tensor
    """State of each row ``[rows]``."""


def sample(mdp: TabularMDP, groups: int, group_size: int, seed: int) -> Sample:
    episodes = sample_groups(mdp, groups, group_size, torch.Generator().manual_seed(seed))
    return Sample(exact(mdp), rollout_batch(mdp, episodes), episodes.states.reshape(-1))


def used_token_scores(drawn: Sample, ess_min: float,
                      fallback: str) -> tuple[list[float], list[float], list[float]]:
    """Per decision step t: the share of d_t whose mean credit over every token of (s, t) has the sign of e(s, t),
    the share of tokens with a valid CTI, and the mean credit over the tokens of the state where the teacher harms
    most (e < 0 with the largest mass at t; NaN when no state at t has e < 0)."""
    truth, batch, states = drawn.truth, drawn.batch, drawn.states
    batch.extras = {}
    _, valid, credit = run_pillar(batch, "anchor", "group_loo", ess_min=ess_min, fallback=fallback)
    turns = batch.turn_index
    horizon, num_states = truth.state_mass.shape
    right, coverage, harm_credit = [], [], []
    for t in range(horizon):
        at_t = turns == t
        share = 0.0
        for s in range(num_states):
            members = at_t & (states == s)
            mass = float(truth.state_mass[t, s])
            if mass == 0.0 or not bool(members.any()):
                continue
            mean = float(credit[members].double().mean())
            share += mass * (mean != 0.0 and (mean > 0) == bool(truth.teacher_effect[t, s] > 0))
        right.append(share)
        coverage.append(float((at_t & valid).sum()) / max(1, int(at_t.sum())))
        harmed = [(float(truth.state_mass[t, s]), s) for s in range(num_states)
                  if truth.teacher_effect[t, s] < 0 and truth.state_mass[t, s] > 0]
        members = at_t & (states == max(harmed)[1]) if harmed else None
        harm_credit.append(float(credit[members].double().mean()) if members is not None and bool(members.any())
                           else float("nan"))
    return right, coverage, harm_credit


def study(groups: int, seeds: list[int], sizes: list[int]) -> dict:
    """{(model, G, ess_min, fallback): (min-over-seeds score per t, mean coverage per t, mean harm-state credit)};
    one sample per (model, G, seed), scored by every pair."""
    results = {}
    for name, make in MODELS.items():
        mdp = make()
        for size in sizes:
            samples = [sample(mdp, groups, size, seed) for seed in seeds]
            for ess_min, fallback in PAIRS:
                runs = [used_token_scores(drawn, ess_min, fallback) for drawn in samples]
                right = [min(values) for values in zip(*(run[0] for run in runs))]
                coverage = [sum(values) / len(values) for values in zip(*(run[1] for run in runs))]
                harm = [sum(values) / len(values) for values in zip(*(run[2] for run in runs))]
                results[(name, size, ess_min, fallback)] = (right, coverage, harm)
    return results


def report(results: dict, groups: int, seeds: list[int], sizes: list[int], seconds: float) -> str:
    horizon = len(next(iter(results.values()))[0])
    steps = " | ".join(f"t={t}" for t in range(horizon))
    lines = [SECTION, "",
             f"Command: `OMP_NUM_THREADS=1 python -m benchmarks.per_state_fallback --groups {groups} --seeds "
             f"{' '.join(map(str, seeds))} --sizes {' '.join(map(str, sizes))}` ({seconds:.0f} s on one core). "
             "Per-state pillar (`grouping: anchor`, `cti_baseline: group_loo`). Right sign = share of d_t whose mean "
             "credit over **every** token of (s, t) (fallback included) has the sign of e(s, t), minimum over the "
             "seeds; coverage = share of tokens with a valid CTI; harm credit = mean credit in the state where the "
             "teacher harms (state 2; it should be < 0), mean over the seeds.", "",
             "Models: `default` as above; `rare goal` (`benchmarks/tabular_mdp.py:rare_goal_mdp`):", "",
             "| t | " + " | ".join(f"d(s={s})" for s in range(4)) + " | " + " | ".join(f"e(s={s})" for s in range(4))
             + " |", "|---" * 9 + "|"]
    truth = exact(rare_goal_mdp())
    for t in range(horizon):
        lines.append(f"| {t} | " + " | ".join(f"{float(v):.3f}" for v in truth.state_mass[t]) + " | "
                     + " | ".join(f"{float(v):+.3f}" for v in truth.teacher_effect[t]) + " |")
    lines += ["", f"| model | G | ess_min | fallback | right sign {steps} | mean over t | coverage {steps} | "
              f"harm credit {steps} |", "|---" * (5 + 3 * horizon) + "|"]
    for (name, size, ess_min, fallback), (right, coverage, harm) in results.items():
        lines.append(f"| {name} | {size} | {ess_min:g} | {fallback} | "
                     + " | ".join(f"{100 * v:.0f}%" for v in right) + f" | {100 * sum(right) / len(right):.1f}% | "
                     + " | ".join(f"{100 * v:.0f}%" for v in coverage) + " | "
                     + " | ".join("-" if v != v else f"{v:+.4f}" for v in harm) + " |")
    lines += ["", "Criterion (mean over t, averaged over the two models):", "",
              "| G | " + " | ".join(f"ess_min {e:g}, {f}" for e, f in PAIRS) + " |", "|---" * (1 + len(PAIRS)) + "|"]
    for size in sizes:
        cells = []
        for ess_min, fallback in PAIRS:
            means = [sum(results[(name, size, ess_min, fallback)][0]) / horizon for name in MODELS]
            cells.append(f"{100 * sum(means) / len(means):.1f}%")
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=4000, help="sampled groups per (model, group size, seed)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8], help="group sizes G")
    args = parser.parse_args()
    started = time.perf_counter()
    results = study(args.groups, args.seeds, args.sizes)
    text = report(results, args.groups, args.seeds, args.sizes, time.perf_counter() - started)
    previous = RESULT.read_text() if RESULT.exists() else ""
    kept = previous.split(SECTION)[0].rstrip() + "\n\n" if previous else ""
    RESULT.write_text(kept + text + EXPLANATION)
    print(text)


EXPLANATION = """
## What the `ess_min` / `fallback` table says

- **The gate fallback undoes per-state credit where the teacher harms.** Judged over every token the loss acts
  on, `fallback: gate` leaves the harmed state's mean credit *positive* in 11 of 12 (model, G, `ess_min`, t >= 1)
  cells (+0.01 to +0.20; the exception is rare goal, G = 8, `ess_min` 0, t = 1, at -0.002): the tokens without two
  same-state siblings (14-78% of them at t >= 1, depending on model, G and `ess_min`) get the plain SDAR gate
  g >= 0 and keep pulling toward the teacher in exactly the state where following it loses. The sign of the mean
  credit is then right on 45-72% of the mass at t >= 1 in every gate row but one (that same row: 100% at t = 1,
  60-68% after).
- **`fallback: none` keeps the sign**: the harmed state's mean credit is negative at every t >= 1 in every row, and
  the mean credit has the right sign on 100% of the default model's mass at G = 8 and 91-100% of the rare-goal
  model's (whose goal state has a teacher effect below 0.01, so its few valid tokens carry a noisy sign); at G = 4
  it is 68-100% (default) and 89-94% (rare goal).
- **`ess_min` 0 vs 1.5** (the question of item (i)): the threshold drops sibling sets whose weights concentrate on
  one sibling, i.e. those that mix the teacher's preferred action with others. `ess_min` 0 raises coverage by 5-11
  points and makes the harmed state's mean credit more negative under `none` (-0.013 to -0.019 against -0.008 to
  -0.011 at G = 8, default model); the sign score is the same or better.
- **The pair for the grid, by the criterion stated in the module docstring** (mean over t of the min-over-seeds
  right-sign share, averaged over the two models): `ess_min` 0 with `fallback: none` (93.7% at G = 4, 98.2% at
  G = 8, where it ties with `ess_min` 1.5 / `none`; a tie goes to the larger coverage). The shipped per-state config
  (`configs/method/craft_state.yaml`) keeps the defaults (`ess_min` 1.5, `fallback: gate`, bit-identical to the
  runs before); the grid of [campaign 2] names the pair in its own overrides.
"""

if __name__ == "__main__":
    main()
