"""Pillar 2: the asymmetric distillation / reference-KL controller (docs/methods.md#pillar-2-asymmetric-controller).

Gate activity a_n (share of valid tokens with g > 0.5, SDAR's ``gate_active_ratio``) is smoothed by an EMA,

    m_n = rho * m_{n-1} + (1 - rho) * a_n            (m_1 = a_1)
    m*  = m at the end of ``warmup_steps`` (or a fixed ``target``)
    e_n = m_n - m*
    lambda_{n+1} = clip(lambda_0 * exp(+eta_lambda * e_n), lambda_0 / B, lambda_0 * B)   distillation weight
    alpha_{n+1}  = clip(alpha_0  * exp(-eta_alpha  * e_n), alpha_0  / B, alpha_0  * B)   reference-KL weight

so the distillation weight rises while the KL weight falls when the teacher is more active than its target, and
conversely. lambda_0, alpha_0 are the objective's configured coefficients, read from the loss terms.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from craft_pl.objective import LossTerms
from craft_pl.pillars.base import STAGE_COEFFICIENTS, CreditPillar
from craft_pl.batch import RolloutBatch

ACTIVITY_TAGS = {"active_ratio": "distill/gate_active_ratio", "gate_mean": "distill/gate_mean"}


class AsymmetricController(CreditPillar):
    """Moves the distillation and reference-KL coefficients in opposite directions along an EMA of gate activity."""

    stage = STAGE_COEFFICIENTS
    name = "controller"

    def __init__(
        self,
        enabled: bool = True,
        ema_decay: float = 0.9,
        warmup_steps: int = 5,
        target: float | None = None,
        gain_distill: float = 2.0,
        gain_kl: float = 2.0,
        bound: float = 4.0,
        activity: Literal["active_ratio", "gate_mean"] = "active_ratio",
    ) -> None:
        """
        Args:
            enabled: False removes the pillar from the loss path (coefficients stay the objective's).
            ema_decay: EMA decay rho of gate activity, in [0, 1).
            warmup_steps: RL steps after which the EMA becomes the activity target m* (when ``target`` is null).
            target: A fixed activity target m* instead of the warm-up EMA.
            gain_distill: Gain eta_lambda of the distillation coefficient.
            gain_kl: Gain eta_alpha of the reference-KL coefficient.
            bound: Multiplicative bound B: each coefficient stays within [c_0 / B, c_0 * B]; must be >= 1.
            activity: Gate activity signal: share of tokens with g > 0.5, or the mean gate.
        """
        super().__init__(enabled)
        if not 0 <= ema_decay < 1:
            raise ValueError(f"controller.ema_decay must be in [0, 1), got {ema_decay}")
        if warmup_steps < 1:
            raise ValueError(f"controller.warmup_steps must be >= 1, got {warmup_steps}")
        if target is not None and not 0 <= target <= 1:
            raise ValueError(f"controller.target must be in [0, 1] or null, got {target}")
        if gain_distill < 0 or gain_kl < 0:
            raise ValueError("controller.gain_distill and controller.gain_kl must be >= 0")
        if bound < 1:
            raise ValueError(f"controller.bound must be >= 1, got {bound}")
        self.ema_decay = ema_decay
        self.warmup_steps = warmup_steps
        self.gain_distill = gain_distill
        self.gain_kl = gain_kl
        self.bound = bound
        self.activity = activity
        self.state: dict[str, Any] = {"steps": 0, "ema": None, "target": target, "base": None, "distill": None,
                                      "kl": None}

    def validate(self, objective) -> None:
        if not objective.use_distill:
            raise ValueError("model.pillars: controller needs model.objective.distill_coef > 0 (gate activity)")

    def transform(self, terms: LossTerms, batch: RolloutBatch) -> LossTerms:
        """Use the controlled coefficients (the configured ones until the first update)."""
        state = self.state
        if state["base"] is None:
            state["base"] = {"distill": terms.coefficients["distill"], "kl": terms.coefficients["kl"]}
        if state["distill"] is not None:
            terms.coefficients = dict(terms.coefficients, distill=state["distill"], kl=state["kl"])
        return terms

    def update(self, stats: dict[str, float]) -> None:
        """One controller step from the RL step's mean gate activity."""
        state = self.state
        activity = stats.get(ACTIVITY_TAGS[self.activity])
        if activity is None or state["base"] is None:
            return
        state["steps"] += 1
        ema = activity if state["ema"] is None else self.ema_decay * state["ema"] + (1 - self.ema_decay) * activity
        state["ema"] = ema
        if state["target"] is None and state["steps"] >= self.warmup_steps:
            state["target"] = ema
        if state["target"] is None:
            return
        error = ema - state["target"]
        state["distill"] = self._bounded(state["base"]["distill"] * math.exp(self.gain_distill * error),
                                         state["base"]["distill"])
        state["kl"] = self._bounded(state["base"]["kl"] * math.exp(-self.gain_kl * error), state["base"]["kl"])

    def _bounded(self, value: float, base: float) -> float:
        return min(max(value, base / self.bound), base * self.bound)

    def metrics(self) -> dict[str, float]:
        state = self.state
        if state["base"] is None:
            return {}
        values = {
            "distill_coef": state["distill"] if state["distill"] is not None else state["base"]["distill"],
            "kl_coef": state["kl"] if state["kl"] is not None else state["base"]["kl"],
        }
        if state["ema"] is not None:
            values["activity_ema"] = state["ema"]
        if state["target"] is not None:
            values["activity_target"] = state["target"]
        return values

    def state_dict(self) -> dict[str, Any]:
        return {key: (dict(value) if isinstance(value, dict) else value) for key, value in self.state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = {key: (dict(value) if isinstance(value, dict) else value) for key, value in state.items()}
