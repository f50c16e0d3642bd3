"""On-policy steps (one mini-batch used once) take their old log-probs from the update's own forward instead of a
separate no-grad pass; the losses are those of the separate pass, to the bit, wherever its values are equal."""

import struct

import pytest

from craft_pl.rollout import experience
from tests.tb import read_scalars
from tests.test_training_toy import _fit

ON_POLICY = ["--data.num_mini_batches=1", "--data.ppo_epochs=1", "--config=configs/method/grpo.yaml"]


def _losses(root):
    scalars = read_scalars(root)
    return {tag: [struct.pack("<f", v) for _, v in scalars[tag]] for tag in
            ("train/loss", "train/pg_loss", "train/kl", "train/clip_fraction", "train/grad_norm")}


def _count_old_passes(monkeypatch):
    calls = {"with_old": 0, "without_old": 0}
    original = experience.score_logprobs

    def counted(policy, batch, with_reference, micro_batch_size, with_old=True):
        calls["with_old" if with_old else "without_old"] += 1
        return original(policy, batch, with_reference, micro_batch_size, with_old)

    monkeypatch.setattr(experience, "score_logprobs", counted)
    return calls


@pytest.mark.slow
def test_an_on_policy_step_skips_the_old_pass_and_logs_the_same_losses(tmp_path, monkeypatch):
    calls = _count_old_passes(monkeypatch)
    _, skipped = _fit(tmp_path, "skipped", ON_POLICY)
    assert calls == {"with_old": 0, "without_old": 2}  # two RL steps, no old pass

    original_make = experience.ExperienceMaker.make
    monkeypatch.setattr(experience.ExperienceMaker, "make",
                        lambda self, *a, **k: original_make(self, *a, **{**k, "one_update": False}))
    _, scored = _fit(tmp_path, "scored", ON_POLICY)
    assert calls["with_old"] == 2
    assert _losses(skipped) == _losses(scored)


def test_several_mini_batches_keep_the_old_pass(tmp_path, monkeypatch):
    calls = _count_old_passes(monkeypatch)
    _fit(tmp_path, "ppo", ["--data.num_mini_batches=2", "--config=configs/method/grpo.yaml"])
    assert calls == {"with_old": 2, "without_old": 0}


@pytest.mark.parametrize("gap_source, passes", [("old", "with_old"), ("sampling", "without_old")])
def test_pillar_one_keeps_the_old_pass_only_when_its_preparation_reads_it(tmp_path, monkeypatch, gap_source, passes):
    calls = _count_old_passes(monkeypatch)
    overlay = tmp_path / f"cti_{gap_source}.yaml"
    overlay.write_text("model:\n  pillars:\n    - class_path: craft_pl.pillars.cti.CounterfactualTokenImportance\n"
                       f"      init_args:\n        gap_source: {gap_source}\n")
    _fit(tmp_path, gap_source, ["--data.num_mini_batches=1", "--config=configs/method/craft.yaml",
                                f"--config={overlay}"])
    assert calls[passes] == 2
