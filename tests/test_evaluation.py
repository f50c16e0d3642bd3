"""Evaluation protocol: fixed panels, no privileged context, per-type metrics that add up, JSON reports."""

import json
import subprocess
import sys

import pytest
import torch

from benchmarks.learning import per_type
from craft_pl.cli import main
from craft_pl.evaluation import EpisodeMetrics
from craft_pl.batch import Trajectory
from craft_pl.rollout.engine import Generation, GenerationEngine
from tests.tb import read_scalars
from tests.test_training_toy import TOY_ARGS
from tests.toy_env import PickWordEnv, WORDS


class HintReadingEngine(GenerationEngine):
    """Answers with the word a prompt's hint names, else with a word no task asks for: it wins only by seeing the
    privileged hint. Records every prompt it was given."""

    prompts: list[str] = []

    def generate(self, model, tokenizer, prompt_ids, sampling, generator, stop_strings=("</action>",)):
        generations = []
        for ids in prompt_ids:
            text = tokenizer.decode(ids)
            HintReadingEngine.prompts.append(text)
            hinted = [w for w in WORDS if f"the answer is {w}" in text]
            word = hinted[0] if hinted else "nothing"
            response = tokenizer.encode(f"<think>ok</think><action>{word}</action>", add_special_tokens=False)
            generations.append(Generation(response, [0.0] * len(response), True))
        return generations


def _args(tmp_path, name, extra=()):
    return [*TOY_ARGS, f"--trainer.default_root_dir={tmp_path / name}",
            f"--model.policy.warm_start.cache_dir={tmp_path / 'cache'}", *extra]


def test_evaluation_never_shows_privileged_context(tmp_path):
    HintReadingEngine.prompts = []
    cli = main(["validate", *_args(tmp_path, "v", ["--data.engine=tests.test_evaluation.HintReadingEngine",
                                                  "--data.val_tasks=6"])])
    metrics = cli.trainer.callback_metrics
    assert metrics["val/success_rate"] == 0.0  # the reported number: the policy without the hint
    assert metrics["val/success_rate_privileged"] == 1.0  # the diagnostic: the same policy shown the hint
    plain = [p for p in HintReadingEngine.prompts if "Hint:" not in p]
    assert len(plain) == 6 * 2  # every plain episode ran its two turns without ever seeing a hint
    assert len(HintReadingEngine.prompts) - len(plain) == 6  # privileged episodes won at once


def test_validate_with_a_checkpoint_writes_json_beside_it(tmp_path):
    main(["fit", *_args(tmp_path, "fit", ["--trainer.max_epochs=1"])])
    (ckpt,) = (tmp_path / "fit").rglob("*.ckpt")
    periodic = list((tmp_path / "fit").rglob("evaluation/val_step*.json"))
    assert periodic and "val/success_rate" in json.loads(periodic[0].read_text())["metrics"]
    # the learning benchmark's per-type view: every type, from the validation before RL to the last one
    kinds = per_type(read_scalars(tmp_path / "fit"))
    assert set(kinds) == set(PickWordEnv().task_types)
    assert sum(k["episodes"] for k in kinds.values()) == 4  # --data.val_tasks=4, one sample each
    assert all(k["curve"][0][0] == 0 and len(k["curve"]) >= 2 for k in kinds.values())  # step 0 = before RL
    assert all(0.0 <= k["start"] <= 1.0 and 0.0 <= k["end"] <= 1.0 for k in kinds.values())
    main(["validate", *_args(tmp_path, "val"), f"--ckpt_path={ckpt}"])
    report = json.loads(ckpt.with_suffix(".validate.json").read_text())
    assert report["ckpt_path"] == str(ckpt) and 0.0 <= report["metrics"]["val/success_rate"] <= 1.0
    main(["test", *_args(tmp_path, "test"), f"--ckpt_path={ckpt}"])
    assert "test/success_rate" in json.loads(ckpt.with_suffix(".test.json").read_text())["metrics"]


def _trajectory(task, won, turns):
    trajectory = Trajectory(task=task, group_id=0, trajectory_id=0)
    trajectory.won, trajectory.score = won, float(won)
    return trajectory


def test_per_type_success_adds_up_to_the_overall_rate():
    env = PickWordEnv()
    tasks = env.task_panel("val", 9, 0)
    metric = EpisodeMetrics(env.task_types, "val")
    outcomes = [True, False, True, True, False, False, True, False, False]
    metric.update([_trajectory(t, won, 1) for t, won in zip(tasks, outcomes)])
    metrics = metric.compute()
    counts = {kind: sum(t.task_type == kind for t in tasks) for kind in env.task_types}
    total = sum(metrics[f"val/success_rate/{kind}"] * counts[kind] for kind in env.task_types)
    assert abs(total - sum(outcomes)) < 1e-9
    assert {kind: metrics[f"val/episodes/{kind}"] for kind in env.task_types} == counts
    assert metrics["val/success_rate"] == sum(outcomes) / len(outcomes)


@pytest.mark.slow
def test_panels_are_the_same_in_every_process_and_for_any_batch_size(tmp_path):
    code = ("from craft_pl.envs.webshop import WebShopEnv; import hashlib; e = WebShopEnv(num_products=300); "
            "print(hashlib.sha256(repr([(t.task_id, t.instruction) for t in e.task_panel('val', 32, 0)]).encode())"
            ".hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
               for _ in range(2)}
    assert len(digests) == 1
    seen = {}
    for batch_envs in (1, 8):
        HintReadingEngine.prompts = []
        main(["validate", *_args(tmp_path, f"b{batch_envs}", ["--data.engine=tests.test_evaluation.HintReadingEngine",
                                                             f"--data.val_batch_envs={batch_envs}",
                                                             "--data.val_privileged=false"])])
        seen[batch_envs] = sorted(HintReadingEngine.prompts)
    assert seen[1] == seen[8]


def test_the_test_panel_has_its_own_size_and_samples(tmp_path):
    HintReadingEngine.prompts = []
    cli = main(["test", *_args(tmp_path, "t", ["--data.engine=tests.test_evaluation.HintReadingEngine",
                                              "--data.val_tasks=2", "--data.test_tasks=5",
                                              "--data.test_samples_per_task=3"])])
    data = cli.datamodule
    assert len(data.panel("val")) == 2 and len(data.panel("test")) == 5
    assert {t.task_id for t in data.panel("test")}.isdisjoint(t.task_id for t in data.panel("val"))
    assert len(HintReadingEngine.prompts) == 5 * 3 * 2  # 5 tasks x 3 samples, two plain turns each
    defaults = main(["test", *_args(tmp_path, "d", ["--data.engine=tests.test_evaluation.HintReadingEngine",
                                                   "--data.val_tasks=2"])]).datamodule
    assert len(defaults.panel("test")) == 2 and defaults.test_samples_per_task == defaults.val_samples_per_task
