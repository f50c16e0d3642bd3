"""An exact tabular multi-step model for checking per-state credit (docs/methods.md#what-the-estimator-measures; used by ``per_state_credit.py``).

Four states, three actions, horizon 4, stochastic transitions, and a Bernoulli terminal reward whose success
probability depends on the state reached after the last action. The student and the teacher are fixed tabular
policies; the teacher is better than the student in states 0, 1 and 3 and *worse* in state 2, which holds more than
25% of the student's state mass at every t >= 1. Everything here is exact (enumeration) except ``sample_groups``.

State 0 is the start (only t = 0), 1 is "on track" (success 0.9 at the end), 2 is "tricky" (0.5), 3 is "off
track" (0.05, nearly absorbing). Action 0 moves toward state 1, action 1 keeps to state 2, action 2 drifts to 3.
In state 2 the teacher prefers action 2: this is the state where following the teacher harms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from craft_pl.batch import RolloutBatch, anchor_ids
from craft_pl.objective import grpo_advantages


@dataclass(frozen=True)
class TabularMDP:
    """A finite-horizon tabular problem with a student and a teacher policy (all float64)."""

    transitions: torch.Tensor
    """P(s' | s, a) ``[S, A, S]``, the same at every t."""
    success: torch.Tensor
    """P(reward = 1 | state reached after the last action) ``[S]``."""
    student: torch.Tensor
    """π_S(a | s) ``[S, A]`` (the sampling policy)."""
    teacher: torch.Tensor
    """π_T(a | s) ``[S, A]`` (the privileged teacher)."""
    horizon: int = 4
    initial_state: int = 0


@dataclass(frozen=True)
class ExactValues:
    """Enumerated quantities of a ``TabularMDP``; t runs over the horizon's decision steps."""

    values: torch.Tensor
    """V(s, t) of the student ``[H + 1, S]`` (V(s, H) = success(s))."""
    q_values: torch.Tensor
    """Q(s, a, t) = Σ_s' P(s'|s,a) V(s', t+1) ``[H, S, A]``."""
    state_mass: torch.Tensor
    """d_t(s): probability that the student is in s at t ``[H, S]``."""
    teacher_effect: torch.Tensor
    """V^cf(s, t) - V(s, t): the action at t drawn from the teacher in s, then the student ``[H, S]``."""


def default_mdp() -> TabularMDP:
    """The model of this benchmark (see the module docstring)."""
    transitions = torch.tensor([
        [[0.0, 0.7, 0.3, 0.0], [0.0, 0.2, 0.6, 0.2], [0.0, 0.0, 0.4, 0.6]],
        [[0.0, 0.9, 0.1, 0.0], [0.0, 0.3, 0.6, 0.1], [0.0, 0.1, 0.3, 0.6]],
        [[0.0, 0.6, 0.3, 0.1], [0.0, 0.2, 0.6, 0.2], [0.0, 0.1, 0.3, 0.6]],
        [[0.0, 0.0, 0.3, 0.7], [0.0, 0.0, 0.1, 0.9], [0.0, 0.0, 0.0, 1.0]],
    ], dtype=torch.float64)
    success = torch.tensor([0.3, 0.9, 0.5, 0.05], dtype=torch.float64)
    student = torch.tensor([[0.35, 0.35, 0.3], [0.4, 0.35, 0.25], [0.5, 0.3, 0.2], [0.35, 0.35, 0.3]],
                           dtype=torch.float64)
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [0.15, 0.2, 0.65], [0.7, 0.2, 0.1]],
                           dtype=torch.float64)
    return TabularMDP(transitions, success, student, teacher)


def rare_goal_mdp() -> TabularMDP:
    """The same four states, but the goal is rare and the teacher's effect there small: state 1 ("on track") holds
    6-11% of the student's mass at t >= 1 and the teacher improves it by less than 0.01, while state 2, where the
    teacher harms, holds 32-55%. Few groups then have n_min same-state siblings in the goal state, so what a token
    without a valid CTI gets (the pillar's ``fallback``) decides most of its credit."""
    transitions = torch.tensor([
        [[0.0, 0.12, 0.58, 0.30], [0.0, 0.04, 0.66, 0.30], [0.0, 0.0, 0.4, 0.6]],
        [[0.0, 0.9, 0.1, 0.0], [0.0, 0.86, 0.12, 0.02], [0.0, 0.82, 0.12, 0.06]],
        [[0.0, 0.10, 0.65, 0.25], [0.0, 0.05, 0.7, 0.25], [0.0, 0.04, 0.36, 0.6]],
        [[0.0, 0.0, 0.3, 0.7], [0.0, 0.0, 0.1, 0.9], [0.0, 0.0, 0.0, 1.0]],
    ], dtype=torch.float64)
    base = default_mdp()
    teacher = base.teacher.clone()
    teacher[1] = torch.tensor([0.6, 0.25, 0.15], dtype=torch.float64)
    return TabularMDP(transitions, base.success, base.student, teacher)


def exact(mdp: TabularMDP) -> ExactValues:
    """Backward induction for V and Q, forward propagation for d_t, and the per-state teacher effect."""
    states, actions, _ = mdp.transitions.shape
    values = torch.zeros(mdp.horizon + 1, states, dtype=torch.float64)
    q_values = torch.zeros(mdp.horizon, states, actions, dtype=torch.float64)
    values[mdp.horizon] = mdp.success
    for t in reversed(range(mdp.horizon)):
        q_values[t] = mdp.transitions @ values[t + 1]
        values[t] = (mdp.student * q_values[t]).sum(dim=1)
    mass = torch.zeros(mdp.horizon, states, dtype=torch.float64)
    mass[0, mdp.initial_state] = 1.0
    for t in range(1, mdp.horizon):
        mass[t] = torch.einsum("s,sa,sap->p", mass[t - 1], mdp.student, mdp.transitions)
    effect = ((mdp.teacher - mdp.student)[None] * q_values).sum(dim=2)
    return ExactValues(values, q_values, mass, effect)


@dataclass(frozen=True)
class Episodes:
    """Sampled groups of sibling trajectories of the student."""

    states: torch.Tensor
    """State at each decision step ``[B, G, H]`` (long)."""
    actions: torch.Tensor
    """Action taken ``[B, G, H]`` (long)."""
    rewards: torch.Tensor
    """Bernoulli terminal reward ``[B, G]`` (0./1.)."""


def sample_groups(mdp: TabularMDP, groups: int, group_size: int, generator: torch.Generator) -> Episodes:
    """``groups`` groups of ``group_size`` student trajectories from the initial state (one seeded generator)."""
    count = groups * group_size
    state = torch.full((count,), mdp.initial_state, dtype=torch.long)
    states, actions = [], []
    for _ in range(mdp.horizon):
        action = torch.multinomial(mdp.student[state], 1, generator=generator)[:, 0]
        states.append(state)
        actions.append(action)
        state = torch.multinomial(mdp.transitions[state, action], 1, generator=generator)[:, 0]
    won = torch.rand(count, generator=generator, dtype=torch.float64) < mdp.success[state]
    shape = (groups, group_size, mdp.horizon)
    return Episodes(torch.stack(states, 1).view(shape), torch.stack(actions, 1).view(shape),
                    won.to(torch.float32).view(groups, group_size))


def rollout_batch(mdp: TabularMDP, episodes: Episodes) -> RolloutBatch:
    """A real ``RolloutBatch``: one row per (trajectory, turn), the response is one token (the action id).

    anchor_ids come from the state, sampling/old log-probs are the student's, teacher log-probs the teacher's, and
    ``advantages`` are GRPO's (verl-agent: over all rows of the group). Rows are ordered (group, trajectory, turn).
    """
    groups, size, horizon = episodes.states.shape
    rows = groups * size * horizon
    group_ids = torch.arange(groups).repeat_interleave(size * horizon)
    trajectory_ids = torch.arange(groups * size).repeat_interleave(horizon)
    turn_index = torch.arange(horizon).repeat(groups * size)
    states, actions = episodes.states.reshape(rows), episodes.actions.reshape(rows)
    rewards = episodes.rewards.reshape(groups * size).repeat_interleave(horizon)
    student_logp = mdp.student[states, actions].log().to(torch.float32)[:, None]
    teacher_logp = mdp.teacher[states, actions].log().to(torch.float32)[:, None]
    batch = RolloutBatch(
        prompt_ids=[[s] for s in states.tolist()],
        response_ids=[[a] for a in actions.tolist()],
        response_mask=torch.ones(rows, 1, dtype=torch.bool),
        group_ids=group_ids,
        trajectory_ids=trajectory_ids,
        turn_index=turn_index,
        anchor_ids=anchor_ids(group_ids.tolist(), turn_index.tolist(), [str(s) for s in states.tolist()]),
        rewards=rewards,
        valid_action=torch.ones(rows, dtype=torch.bool),
        sampling_logp=student_logp.clone(),
        old_logp=student_logp,
        teacher_logp=teacher_logp,
    )
    batch.advantages = grpo_advantages(batch.rewards, batch.group_ids, 1e-6, True)
    return batch
