"""SDAR's gated distillation, its presets' gate values, the teacher adapters and the teacher prompt."""

import math

import pytest
import torch

from craft_pl.rollout.experience import rows_from_trajectories, score_teacher, with_privileged_contexts
from craft_pl.objective import Objective, distillation_loss, sdar_gate
from craft_pl.model import Policy
from tests.conftest import TINY, toy_corpus
from tests.test_objective import _batch


def _sdar_batch(objective, teacher=(-0.5, -2.0, -1.0), student=(-1.0, -1.0, -1.0)):
    """A prepared two-row batch with these teacher log-probs, and the student's log-probs (requiring grad)."""
    batch = _batch()
    batch.teacher_logp = torch.tensor([list(teacher), list(teacher)])
    objective.prepare(batch)
    return batch, torch.tensor([list(student), list(student)], requires_grad=True)


def _sdar_terms(objective, teacher=(-0.5, -2.0, -1.0), student=(-1.0, -1.0, -1.0)):
    batch, logp = _sdar_batch(objective, teacher, student)
    return batch, logp, objective.terms(batch, logp, torch.zeros(2, 3))


def test_sdar_loss_and_gradient_match_hand_computation():
    objective = Objective(pg_coef=0.0, entropy_coef=0.0, kl_coef=0.0, distill_coef=0.01, gate_beta=5.0)
    _, logp, terms = _sdar_terms(objective)
    loss, parts = objective.compose(terms)
    gaps = [0.5, -1.0, 0.0]
    gates = [1 / (1 + math.exp(-5 * d)) for d in gaps]
    per_token = [g * d for g, d in zip(gates, gaps)]
    distill = (sum(per_token) + sum(per_token[:2])) / 5  # row 1 has 2 valid tokens
    assert parts["distill/loss"].item() == pytest.approx(distill, rel=1e-5)
    assert loss.item() == pytest.approx(0.01 * distill, rel=1e-5)
    assert parts["distill/gate_active_ratio"].item() == pytest.approx(2 / 5)  # g > 0.5 only where the gap > 0
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-0.01 * g / 5 for g in gates], rel=1e-5)
    assert logp.grad[1, 2].item() == 0.0


def test_distillation_gradient_is_sign_blind():
    """For any teacher-student gap, the gated gradient raises the sampled token's log-prob."""
    for gap in torch.linspace(-30, 30, 61):
        logp = torch.tensor([0.0], requires_grad=True)
        teacher = logp.detach() + gap
        distillation_loss(sdar_gate(teacher, logp, 5.0), teacher, logp).sum().backward()
        assert logp.grad.item() <= 0  # descent never lowers the sampled token
        if abs(gap) <= 10:
            assert logp.grad.item() < 0  # and raises it wherever the gate has not underflowed


def test_grpo_opsd_preset_gate_is_one_half_everywhere():
    _, _, terms = _sdar_terms(Objective(distill_coef=0.01, gate_beta=0.0), teacher=(-9.0, 3.0, -0.1))
    assert torch.equal(terms.gate, torch.full((2, 3), 0.5))


@pytest.mark.parametrize("kwargs", [{"gate_beta": -1.0}, {"distill_coef": -0.1}])
def test_negative_sdar_settings_fail(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Objective(**kwargs)


def test_ema_teacher_moves_toward_the_policy_at_the_configured_rate():
    policy = Policy(tiny=TINY, teacher="ema", teacher_ema_decay=0.75)
    policy.build(toy_corpus(), None, seed=0)
    pairs = policy._adapter_pairs("policy", "teacher")
    with torch.no_grad():
        for weight, _ in pairs:
            weight.add_(1.0)
    before = [(p.clone(), t.clone()) for p, t in pairs]
    policy.after_optimizer_step()
    for (p, t), (p0, t0) in zip(pairs, before):
        assert torch.allclose(t, 0.75 * t0 + 0.25 * p0, atol=1e-6)
        assert not t.requires_grad
    frozen = Policy(tiny=TINY, teacher="frozen")
    frozen.build(toy_corpus(), None, seed=0)
    pairs = frozen._adapter_pairs("policy", "teacher")
    with torch.no_grad():
        pairs[0][0].add_(1.0)
    snapshot = pairs[0][1].clone()
    frozen.after_optimizer_step()
    assert torch.equal(pairs[0][1], snapshot)


@pytest.mark.parametrize("kwargs", [{"teacher_ema_decay": 1.0}, {"teacher": "ema", "finetune": "full"}])
def test_bad_teacher_settings_fail(kwargs):
    with pytest.raises(ValueError):
        Policy(**kwargs)


def test_teacher_prompt_is_privileged_text_then_student_prompt_with_the_same_response_ids(tiny_policy, monkeypatch):
    from tests.test_collector import _run
    from tests.toy_env import PickWordEnv

    task = PickWordEnv().task_panel("train", 1, 0)[0]
    trajectories, _ = _run(tiny_policy, {"max_turns": 1}, [f"<think>ok</think><action>{task.payload}</action>"] * 2,
                           group=2)
    batch, texts = rows_from_trajectories(trajectories, 0.1)
    captured = {}
    original = tiny_policy.token_scores

    def spy(prompts, responses, which="policy", **kwargs):
        captured.update(prompts=prompts, responses=responses, which=which)
        return original(prompts, responses, which, **kwargs)

    monkeypatch.setattr(tiny_policy, "token_scores", spy)
    stats = score_teacher(tiny_policy, batch, with_privileged_contexts(texts, [task], PickWordEnv()), 24, 64)
    hint = PickWordEnv().privileged_context(task)
    for teacher_ids, student_ids, response in zip(captured["prompts"], batch.prompt_ids, captured["responses"]):
        assert teacher_ids[-len(student_ids):] == student_ids
        assert tiny_policy.decode(teacher_ids).startswith(hint)
    assert captured["responses"] == batch.response_ids and captured["which"] == "teacher"
    assert batch.teacher_logp.shape == batch.response_mask.shape
    assert stats["teacher/truncated_rows"] == 0 and stats["teacher/context_tokens"] > 0
