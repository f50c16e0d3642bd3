"""The loss recipe: the one home of the sequence that turns an RL step's rows into a loss.

Per RL step, on the whole step (``prepare``, called by the data side once the rows are scored):

    1. advantages          ``objective.prepare``: the advantage estimator's per-row advantages and diagnostics
    2. pillar preparation  each active pillar's group-level ``prepare`` (sibling statistics, CTI, ...)

Per mini-batch (``loss``, called by ``CraftModule.training_step``, the tests and the benchmarks alike):

    3. terms               ``objective.terms``: per-token factors from the current log-probs and entropy
    4. pillar transforms   each active pillar's ``transform``, in the canonical order (credit, coefficients, penalties)
    5. composition         ``objective.compose``: the one reduction, in the baseline's fixed order

After the step's last mini-batch (``finish_step``): each active pillar's ``update`` from the step's mean metrics,
then its metrics. A pillar absent from the list or built with ``enabled: false`` runs no code here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from craft_pl.batch import DataFacts, RolloutBatch
from craft_pl.objective import LossTerms, Objective
from craft_pl.pillars import CreditPillar, canonical_order


@dataclass
class MiniBatchLoss:
    """What one mini-batch (or micro-batch) of the recipe gives: the loss, its logged parts, the composed terms and
    the per-token factors that inspection shows (``[rows, tokens]`` each: gate, credit, and the pillars' own)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    terms: LossTerms
    inspected: dict[str, torch.Tensor]


class LossRecipe:
    """The objective and its credit pillars, applied in the recipe's fixed order (see the module docstring)."""

    def __init__(self, objective: Objective, pillars: list[CreditPillar]) -> None:
        self.objective = objective
        self.pillars = list(pillars)
        self.active_pillars = canonical_order(self.pillars)
        for pillar in self.active_pillars:
            pillar.validate(objective)

    # ------------------------------------------------------------------ what the data side must provide
    @property
    def needs_reference_logp(self) -> bool:
        """Score every row with the reference (the objective has a KL term)."""
        return self.objective.use_kl

    @property
    def needs_teacher_logp(self) -> bool:
        """Score every row with the privileged teacher (the objective has a distillation term)."""
        return self.objective.use_distill

    @property
    def reads_old_logp_in_prepare(self) -> bool:
        """Some preparation reads ``old_logp`` (so it must be scored before the update even on-policy)."""
        return any(pillar.reads_old_logp_in_prepare for pillar in self.active_pillars)

    @property
    def logits_top_k(self) -> int:
        """Competing logits per token the training forward must return (0 = none)."""
        return max((pillar.logits_top_k for pillar in self.active_pillars), default=0)

    @property
    def needs_full_distribution(self) -> bool:
        """The teacher's scoring and the training forward return whole next-token distributions."""
        return any(pillar.needs_full_distribution for pillar in self.active_pillars)

    def check_data(self, facts: DataFacts) -> None:
        """Raise ``ValueError`` naming the fix when the data settings cannot serve this recipe (before any model
        loads); pillars warn about settings that leave them nothing to do."""
        if self.objective.use_distill and not facts.has_privileged_context:
            raise ValueError(
                f"model.objective.distill_coef > 0 needs a teacher, but {facts.env_name} offers no privileged "
                "context; pick an environment with skills/hints or use configs/method/grpo.yaml"
            )
        if self.objective.pg_coef > 0 and facts.group_size < 2:
            raise ValueError(
                f"data.group_size={facts.group_size} gives every row an advantage of exactly 0 (group "
                "advantages compare a trajectory with its siblings), so the policy gradient is 0; use data.group_size "
                ">= 2 (the paper uses 8)"
            )
        for pillar in self.active_pillars:
            pillar.check_data(facts.group_size)

    # ------------------------------------------------------------------ the recipe
    def prepare(self, batch: RolloutBatch) -> dict[str, float]:
        """Steps 1-2 on the whole RL step's rows; returns the advantage estimator's diagnostics."""
        diagnostics = self.objective.prepare(batch)
        for pillar in self.active_pillars:
            pillar.prepare(batch)
        return diagnostics

    def loss(self, batch: RolloutBatch, logp: torch.Tensor, entropy: torch.Tensor,
             logits=None) -> MiniBatchLoss:
        """Steps 3-5 on a mini-batch, given the current ``logp`` and ``entropy`` ``[rows, tokens]`` (entropy is
        detached here unless the objective trains it) and, when a pillar asked for them, the forward's other scores
        (``ResponseScores``: competing logits, whole distributions)."""
        if not self.objective.entropy_coef:
            entropy = entropy.detach()  # logged, not trained
        terms = self.objective.terms(batch, logp, entropy)
        if self.logits_top_k or self.needs_full_distribution:
            terms.logits = logits
        for pillar in self.active_pillars:
            terms = pillar.transform(terms, batch)
        loss, metrics = self.objective.compose(terms)
        inspected = {name: factor.detach() for name, factor in (("gate", terms.gate), ("credit", terms.credit))
                     if factor is not None}
        for pillar in self.active_pillars:
            for name in pillar.inspected_extras:
                if name in batch.extras:
                    inspected[name] = batch.extras[name].detach()
        return MiniBatchLoss(loss, metrics, terms, inspected)

    def finish_step(self, stats: dict[str, float]) -> dict[str, float]:
        """After the step's last mini-batch: each active pillar's update from the step's mean metrics; returns
        their metrics as ``pillar/<name>/<key>``."""
        logged = {}
        for pillar in self.active_pillars:
            pillar.update(stats)
            logged.update({f"pillar/{pillar.name}/{key}": value for key, value in pillar.metrics().items()})
        return logged

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, dict]:
        """Every listed pillar's state (enabled or not), by name."""
        return {pillar.name: pillar.state_dict() for pillar in self.pillars}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        for pillar in self.pillars:
            if pillar.name in state:
                pillar.load_state_dict(state[pillar.name])
