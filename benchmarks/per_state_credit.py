"""Does Pillar 1's credit carry the per-state teacher effect? An exact check on a tabular model (docs/methods.md#what-the-estimator-measures).

Usage: OMP_NUM_THREADS=1 python -m benchmarks.per_state_credit [--groups 4000] [--seeds 0 1 2] [--sizes 4 8]

The model (``benchmarks/tabular_mdp.py``) gives, by enumeration, the true per-state effect of the teacher
e(s, t) = V^cf(s, t) - V(s, t). We sample groups of G student trajectories, build a real ``RolloutBatch`` (one row per
turn, one token per row), run the real ``CounterfactualTokenImportance`` pillar (``prepare`` then ``transform`` after
``Objective.terms``) with ``grouping`` group / anchor and ``cti_baseline`` self / group_loo, and for every (s, t) take
the sign of the mean CTI (and of the mean credit c = g·tanh(CTI/κ)) over the tokens in state s at turn t that have a
valid CTI. The score at t is the share of the state mass d_t whose sign matches sign(e(s, t)); a state with no valid
token counts as wrong. Sign scores are the minimum over the seeds, the other columns their mean.
Writes benchmarks/results/per_state_credit.md.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.tabular_mdp import ExactValues, TabularMDP, default_mdp, exact, rollout_batch, sample_groups
from craft_pl.batch import RolloutBatch
from craft_pl.objective import Objective
from craft_pl.pillars.cti import CounterfactualTokenImportance

RESULT = Path(__file__).resolve().parent / "results" / "per_state_credit.md"
VARIANTS = [("group", "self"), ("group", "group_loo"), ("anchor", "self"), ("anchor", "group_loo")]


@dataclass
class CreditScore:
    """Sign agreement of one pillar variant with the exact per-state teacher effect, per decision step t."""

    mass_correct_cti: list[float]
    """Share of d_t whose mean-CTI sign matches sign(e(s, t))."""
    mass_correct_credit: list[float]
    """The same for the mean credit c = g·tanh(CTI/κ) (what the loss uses)."""
    coverage: list[float]
    """Share of tokens at t with a valid CTI."""
    token_agreement: list[float]
    """Share of valid tokens with CTI != 0 whose own sign matches sign(e(s, t))."""
    follows_advantage: list[float]
    """Share of valid tokens with CTI != 0 and A != 0 where sign(CTI) = -sign(A) (docs/methods.md#what-the-estimator-measures)."""


def run_pillar(batch: RolloutBatch, grouping: str, baseline: str,
               **pillar_args) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The real pillar on ``batch``: per-row CTI, validity and credit (one token per row), each ``[rows]``;
    ``pillar_args`` (e.g. ``ess_min``, ``fallback``) go to the pillar as they are."""
    pillar = CounterfactualTokenImportance(grouping=grouping, cti_baseline=baseline,
                                          align="turn_token" if grouping == "anchor" else "flat", **pillar_args)
    objective = Objective(kl_coef=0.0, distill_coef=0.01, gate_beta=5.0)
    pillar.prepare(batch)
    terms = objective.terms(batch, batch.old_logp, torch.zeros_like(batch.old_logp))
    terms = pillar.transform(terms, batch)
    return batch.extras["cti"][:, 0], batch.extras["cti_valid"][:, 0], terms.credit[:, 0]


def score(truth: ExactValues, batch: RolloutBatch, states: torch.Tensor, cti: torch.Tensor, valid: torch.Tensor,
          credit: torch.Tensor) -> CreditScore:
    """Compare per-(s, t) mean CTI / credit signs with the exact effect; ``states`` ``[rows]``."""
    horizon, num_states = truth.state_mass.shape
    turns = batch.turn_index
    sign_truth = torch.sign(truth.teacher_effect)[turns, states]                         # [rows]
    out = CreditScore([], [], [], [], [])
    for t in range(horizon):
        at_t = turns == t
        correct_cti = correct_credit = 0.0
        for s in range(num_states):
            mass = float(truth.state_mass[t, s])
            members = at_t & (states == s) & valid
            if mass == 0.0 or not bool(members.any()):
                continue
            expected = float(torch.sign(truth.teacher_effect[t, s]))
            correct_cti += mass * (float(torch.sign(cti[members].double().mean())) == expected)
            correct_credit += mass * (float(torch.sign(credit[members].double().mean())) == expected)
        out.mass_correct_cti.append(correct_cti)
        out.mass_correct_credit.append(correct_credit)
        out.coverage.append(float((at_t & valid).sum()) / max(1, int(at_t.sum())))
        signed = at_t & valid & (cti != 0)
        out.token_agreement.append(float((torch.sign(cti[signed]) == sign_truth[signed]).double().mean())
                                   if bool(signed.any()) else 0.0)
        advantage = batch.advantages
        both = signed & (advantage != 0)
        out.follows_advantage.append(float((torch.sign(cti[both]) == -torch.sign(advantage[both])).double().mean())
                                     if bool(both.any()) else 0.0)
    return out


def evaluate(mdp: TabularMDP, groups: int, group_size: int, seed: int,
             variants=VARIANTS) -> dict[tuple[str, str], CreditScore]:
    """Sample once (seeded), then score every (grouping, baseline) variant on the same batch."""
    truth = exact(mdp)
    episodes = sample_groups(mdp, groups, group_size, torch.Generator().manual_seed(seed))
    batch = rollout_batch(mdp, episodes)
    states = episodes.states.reshape(-1)
    results = {}
    for grouping, baseline in variants:
        batch.extras = {}
        cti, valid, credit = run_pillar(batch, grouping, baseline)
        results[(grouping, baseline)] = score(truth, batch, states, cti, valid, credit)
    return results


def _row(values: list[float]) -> str:
    return " | ".join(f"{100 * v:.0f}%" for v in values)


def combine(per_seed: list[CreditScore]) -> CreditScore:
    """Minimum over seeds of the sign scores, mean of the rest."""
    def column(name, reduce):
        return [reduce(values) for values in zip(*(getattr(score, name) for score in per_seed))]

    def mean(values):
        return sum(values) / len(values)

    return CreditScore(column("mass_correct_cti", min), column("mass_correct_credit", min),
                       column("coverage", mean), column("token_agreement", mean), column("follows_advantage", mean))


def report(mdp: TabularMDP, results: dict[int, dict], groups: int, seeds: list[int], seconds: float) -> str:
    truth = exact(mdp)
    horizon, num_states = truth.state_mass.shape
    steps = " | ".join(f"t={t}" for t in range(horizon))
    lines = [
        "# Per-state credit on an exact tabular model", "",
        f"Command: `OMP_NUM_THREADS=1 python -m benchmarks.per_state_credit --groups {groups} --seeds "
        f"{' '.join(map(str, seeds))}` ({groups} groups of G trajectories per seed and G, one sample per (seed, G) "
        f"shared by the four variants; {seconds:.0f} s on one core). Sign scores: minimum over the seeds; "
        "coverage, token agreement and -sign(A): mean over the seeds.",
        "", "Model (`benchmarks/tabular_mdp.py`): 4 states, 3 actions, horizon 4, stochastic transitions, Bernoulli "
        "terminal reward; the teacher is better than the student in states 0, 1, 3 and worse in state 2. Exact "
        "student state mass d_t(s) and per-state teacher effect e(s, t) = V^cf(s, t) - V(s, t):", "",
        "| t | " + " | ".join(f"d(s={s})" for s in range(num_states)) + " | "
        + " | ".join(f"e(s={s})" for s in range(num_states)) + " |",
        "|---" * (1 + 2 * num_states) + "|",
    ]
    for t in range(horizon):
        lines.append(f"| {t} | " + " | ".join(f"{float(v):.3f}" for v in truth.state_mass[t]) + " | "
                     + " | ".join(f"{float(v):+.3f}" for v in truth.teacher_effect[t]) + " |")
    lines += ["", "Share of the state mass at t whose sign of the mean CTI (and of the mean credit c = g·tanh(CTI/κ)) "
              "over the valid tokens of (s, t) matches sign(e(s, t)); coverage = share of tokens with a valid CTI; "
              "token agreement = share of valid tokens with CTI != 0 whose own sign matches sign(e); "
              "-sign(A) = share of those tokens whose sign is minus the sign of their own advantage.", "",
              f"| G | grouping, baseline | CTI sign {steps} | credit sign {steps} | coverage {steps} |",
              "|---" * (2 + 3 * horizon) + "|"]
    for size, by_variant in results.items():
        for (grouping, baseline), s in by_variant.items():
            lines.append(f"| {size} | {grouping}, {baseline} | {_row(s.mass_correct_cti)} | "
                         f"{_row(s.mass_correct_credit)} | {_row(s.coverage)} |")
    lines += ["", f"| G | grouping, baseline | token agreement {steps} | -sign(A) {steps} |",
              "|---" * (2 + 2 * horizon) + "|"]
    for size, by_variant in results.items():
        for (grouping, baseline), s in by_variant.items():
            lines.append(f"| {size} | {grouping}, {baseline} | {_row(s.token_agreement)} | "
                         f"{_row(s.follows_advantage)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=4000, help="sampled groups per group size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8], help="group sizes G")
    args = parser.parse_args()
    mdp = default_mdp()
    started = time.perf_counter()
    results = {}
    for size in args.sizes:
        per_seed = [evaluate(mdp, args.groups, size, seed) for seed in args.seeds]
        results[size] = {variant: combine([run[variant] for run in per_seed]) for variant in VARIANTS}
    text = report(mdp, results, args.groups, args.seeds, time.perf_counter() - started)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(text + EXPLANATION)
    print(text)


EXPLANATION = """
## What the table says

- **t = 0 is a per-state counterfactual for both groupings**: every sibling starts in state 0, so `group` and
  `anchor` are the same computation there.
- **`grouping: group` at t >= 1** compares a token with siblings that stand in other states. Ā then converges to
  one value marginal over the states (docs/methods.md#what-the-estimator-measures), the same for every state, so the sign of the mean credit
  cannot follow the per-state effect: it is wrong on 27-56% of the state mass at t = 1..3, including the state
  where the teacher harms (state 2, 28-44% of the mass).
- **`grouping: anchor`** compares a token only with the rows of the same group, turn and state. With G = 8 the
  sign of the mean CTI is right on 100% of the mass at every t, for both baselines and every seed. The price is
  coverage: a token needs n_min = 2 same-state siblings (and ESS >= 1.5), which 65-67% of the tokens at t >= 1 have
  with G = 8 and only 22-23% with G = 4; the others keep the plain SDAR gate (the pillar's fallback).
- **Spec 8.4 (binary rewards, `cti_baseline: self`) holds for the variant too**: on 100% of the tokens with a
  non-zero CTI, sign(CTI) = -sign(A). A token's own Δ never enters its own CTI (leave-one-out), and with 0/1
  rewards its advantage is the largest or the smallest among its same-state siblings, so Ā - A^(i) has the sign
  of -A^(i) whatever the teacher does; the teacher only changes the magnitude. Per-state grouping does not change
  this; it only makes the *average* over a state's tokens right (the leave-one-out means of a state group sum to
  the group's own sum, so the -A parts cancel and the teacher-weighted part remains). The loss does not average
  first: the credit c = g·tanh(CTI/κ) weights each token by the gate of its own action, i.e. it keeps the tokens
  where the teacher agrees with the action taken, and the mean *credit* of `anchor, self` has the wrong sign on
  55-75% of the mass at t >= 1. With `cti_baseline: group_loo` the token's CTI compares the teacher-weighted with
  the uniform mean of its same-state siblings and holds no trace of its own advantage (-sign(A) about 50%, i.e.
  independent): per token the sign matches the true effect 60-73% of the time at t >= 1, and the mean credit's sign
  is right on 100% of the mass at every t with G = 8. Hence `configs/method/craft_state.yaml` pairs
  `grouping: anchor` with `cti_baseline: group_loo`.
- G = 4 is too few for per-state credit: besides the low coverage, the mean credit's sign falls to 68% at t = 1 on
  one seed even with `group_loo`.
"""

if __name__ == "__main__":
    main()
