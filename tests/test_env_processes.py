"""Environments in worker processes (``data.env_workers: process``) can always be stopped: a step stuck in C code
holding the GIL (a runaway regex) or spinning in Python is killed at ``env_step_timeout_s`` and its worker
replaced, and the episodes are the same as in-process ones."""

import re
import threading
import time

import pytest
import torch

from craft_pl.cli import main
from craft_pl.datamodule import RolloutDataModule
from craft_pl.rollout.collector import Collector
from craft_pl.rollout.engine import SamplingParams
from craft_pl.rollout.env_process import EnvironmentProcessDied, ProcessEnv, process_env_factory
from craft_pl.rollout.watchdog import clear_stop, request_stop
from tests.test_collector import ScriptedEngine
from tests.test_training_toy import TOY_ARGS
from tests.toy_env import WORDS, PickWordEnv

STUCK = WORDS[0]


class StuckEnv(PickWordEnv):
    """Choosing ``STUCK`` runs a regex that backtracks for ages inside C code (holding the GIL), or spins in Python."""

    def __init__(self, max_turns: int = 2, how: str = "regex") -> None:
        super().__init__(max_turns)
        self.how = how

    def transition(self, action):
        if action == STUCK:
            if self.how == "regex":
                re.fullmatch(r"(a+)+$", "a" * 64 + "!")  # 2^64 backtracking steps, never releases the GIL
            while True:
                pass
        return super().transition(action)


def _act(word: str) -> str:
    return f"<think>x</think><action>{word}</action>"


def _run(factory, texts, timeout_s=60.0, tasks=None, group=4):
    tasks = tasks or PickWordEnv().task_panel("train", 1, 0)
    collector = Collector(factory, history_length=2, env_step_timeout_s=timeout_s)
    started = time.perf_counter()
    trajectories = collector.run(tasks, group, POLICY[0], ScriptedEngine(texts), SamplingParams(), torch.Generator())
    return trajectories, time.perf_counter() - started, collector


POLICY = []


@pytest.fixture(autouse=True)
def _policy(tiny_policy):
    POLICY[:] = [tiny_policy]
    yield


def _summary(trajectories):
    return [(t.won, t.env_error, len(t.turns), [r.prompt_parts.render() for r in t.turns]) for t in trajectories]


def test_worker_processes_give_the_same_episodes_as_in_process_environments():
    word = PickWordEnv().task_panel("train", 1, 0)[0].payload
    texts = [_act(word), _act("nothing"), "junk", _act(WORDS[1]), _act(word), _act(word), _act(word)]
    in_process, _, _ = _run(PickWordEnv, list(texts))
    in_workers, _, collector = _run(process_env_factory(PickWordEnv), list(texts))
    assert _summary(in_workers) == _summary(in_process)
    assert all(isinstance(env, ProcessEnv) and env.alive() for env in collector.pool)
    for env in collector.pool:
        env.close()
    assert not any(env.alive() for env in collector.pool)


@pytest.mark.parametrize("how", ["regex", "spin"])
def test_a_step_stuck_holding_the_gil_is_killed_and_its_worker_replaced(how):
    """Guards: a step stuck in a runaway regex (C code holding the GIL) never timed out, and one spinning in Python
    timed out but kept its abandoned thread spinning (a 4-step run had not finished after 15 minutes)."""
    others = [w for w in WORDS if w != STUCK]
    texts = [_act(STUCK)] + [_act(others[0])] * 3 + [_act(others[0])] * 3
    trajectories, seconds, collector = _run(process_env_factory(lambda: StuckEnv(how=how)), texts, timeout_s=1.0)
    assert seconds < 10
    assert trajectories[0].env_error and not any(t.env_error for t in trajectories[1:])
    assert all(env.alive() for env in collector.pool)  # the stuck worker was replaced by a fresh one
    for env in collector.pool:
        env.close()


def test_a_killed_worker_raises_naming_it_and_errors_cross_the_pipe():
    env = ProcessEnv(PickWordEnv)
    task = env.task_panel("train", 1, 0)[0]
    assert env.reset(task).startswith("options:")
    with pytest.raises(AttributeError):
        env.no_such_method()
    env.kill()
    assert not env.alive()
    with pytest.raises(EnvironmentProcessDied, match="environment worker"):
        env.reset(task)


def test_the_knob_is_checked():
    with pytest.raises(ValueError, match="data.env_workers='fiber'"):
        RolloutDataModule(PickWordEnv, env_workers="fiber")


def test_a_toy_run_trains_with_environment_workers(tmp_path):
    cli = main(["fit", *TOY_ARGS, f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.max_epochs=1",
                f"--model.policy.warm_start.cache_dir={tmp_path / 'cache'}", "--data.val_tasks=1",
                "--data.env_workers=process"])
    assert cli.trainer.current_epoch == 1 and list((tmp_path / "run").rglob("*.ckpt"))


def test_a_stop_request_during_a_stuck_step_stops_at_once_and_kills_the_worker():
    """Guards: with the step stuck in C code holding the GIL, a SIGTERM took 33 s to act (the signal handler waits
    for the GIL); a worker's stuck step holds no GIL of the trainer, and the worker is killed on the way out."""
    stop_soon = threading.Timer(0.5, request_stop, args=(KeyboardInterrupt,))
    others = [w for w in WORDS if w != STUCK]
    texts = [_act(STUCK)] + [_act(others[0])] * 3
    tasks = PickWordEnv().task_panel("train", 1, 0)
    collector = Collector(process_env_factory(lambda: StuckEnv(how="regex")), history_length=2, env_step_timeout_s=0)
    workers = collector.environments(4)
    started = time.perf_counter()
    stop_soon.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            collector.run(tasks, 4, POLICY[0], ScriptedEngine(texts), SamplingParams(), torch.Generator())
    finally:
        clear_stop()
    assert time.perf_counter() - started < 3
    assert not workers[0].alive() and collector.pool[0] is None
    for env in workers[1:]:
        env.close()
