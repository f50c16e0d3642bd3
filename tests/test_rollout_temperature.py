"""Rollouts at a temperature T != 1: every log-prob of their responses is taken at T (logits / T), as the sampler
drew them, so that the PPO ratio starts at 1 and the update is the gradient of what was sampled (verl does the same)."""

import pytest
import torch

from craft_pl.loss import LossRecipe
from craft_pl.model.logprobs import scores_from_logits
from craft_pl.objective import Objective
from craft_pl.rollout.engine import HFEngine, SamplingParams
from craft_pl.rollout.experience import ExperienceMaker
from craft_pl.rollout.prompts import teacher_prompt
from tests.test_signal import _tasks
from tests.toy_env import PickWordEnv


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_old_and_reference_log_probs_equal_the_samplers_at_the_rollout_temperature(tiny_policy, temperature):
    maker = ExperienceMaker(lambda: PickWordEnv(max_turns=1), 1, HFEngine(), 8)
    recipe = LossRecipe(Objective(distill_coef=0.01, kl_coef=0.01), [])
    experience = maker.make(tiny_policy, _tasks("apple", "cloud"), 4, SamplingParams(temperature, 1.0, 16),
                            torch.Generator().manual_seed(0), recipe, PickWordEnv(max_turns=1))
    batch, mask = experience.batch, experience.batch.response_mask
    assert batch.temperature == temperature and mask.sum() > 20
    # a fresh adapter (LoRA B = 0): policy, reference and rollout weights are the same function
    torch.testing.assert_close(batch.old_logp[mask], batch.sampling_logp[mask], atol=2e-5, rtol=0)
    torch.testing.assert_close(batch.ref_logp[mask], batch.sampling_logp[mask], atol=2e-5, rtol=0)
    at_one, _, _ = tiny_policy.token_logprobs(batch.prompt_ids, batch.response_ids, "policy")
    assert (at_one[mask] - batch.sampling_logp[mask]).abs().max() > 1e-2  # what scoring at 1.0 got wrong
    # the teacher's prompts (privileged context + student prompt), scored at T: the batch's teacher log-probs
    texts = [experience.texts[key] for key in zip(batch.trajectory_ids.tolist(), batch.turn_index.tolist())]
    teacher_prompts = [teacher_prompt(tiny_policy, t.prompt_parts, t.privileged_context, 16).ids for t in texts]
    teacher_at_t, _, _ = tiny_policy.token_logprobs(teacher_prompts, batch.response_ids, "teacher",
                                                   temperature=temperature)
    teacher_at_one, _, _ = tiny_policy.token_logprobs(teacher_prompts, batch.response_ids, "teacher")
    torch.testing.assert_close(batch.teacher_logp[mask], teacher_at_t[mask], atol=2e-5, rtol=0)
    assert (batch.teacher_logp[mask] - teacher_at_one[mask]).abs().max() > 1e-2


def test_scores_divide_the_logits_for_log_probs_and_entropy_only():
    logits = torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([[1, 4, 0], [7, 2, 9]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    scores = scores_from_logits(logits, ids, mask, with_entropy=True, top_k=2, temperature=2.0)
    log_probs = torch.log_softmax(logits / 2.0, dim=-1)
    expected = log_probs.gather(-1, ids[..., None]).squeeze(-1) * mask
    torch.testing.assert_close(scores.logp, expected)
    torch.testing.assert_close(scores.entropy, -(log_probs.exp() * log_probs).sum(-1) * mask)
    torch.testing.assert_close(scores.sampled_logit, logits.gather(-1, ids[..., None]).squeeze(-1) * mask)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        scores_from_logits(logits, ids, mask, False, 0, temperature=0.0)


@pytest.mark.slow
def test_every_scoring_of_a_fit_at_temperature_1_3_is_at_1_3(tmp_path, monkeypatch):
    """The data side's passes (old, reference) and the learner's forward all take the rollout temperature; the
    warm start (behaviour cloning, no sampling) is the only scoring at 1.0."""
    from craft_pl.model.policy import Policy
    from tests.test_training_toy import _fit

    seen = []
    original = Policy.token_scores

    def recording(self, *args, **kwargs):
        seen.append((torch.is_grad_enabled(), kwargs.get("temperature", 1.0)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Policy, "token_scores", recording)
    _fit(tmp_path, "hot", ["--data.temperature=1.3", "--trainer.max_epochs=1"])
    assert {grad for grad, _ in seen} == {True, False}  # the learner's forward and the no-grad passes
    assert {temperature for _, temperature in seen} == {1.3}
