"""Nothing hangs, bad numbers stop where they enter: an environment call that never returns ends only its episode
(and its instance is replaced), a non-finite reward ends only its episode, and Ctrl-C or SIGTERM during a hung call
still saves ``interrupted.ckpt`` and exits."""

import logging
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from craft_pl.datamodule import RolloutDataModule
from craft_pl.envs.base import StepResult, Task
from craft_pl.rollout.collector import Collector
from craft_pl.rollout.engine import SamplingParams
from craft_pl.rollout.experience import rows_from_trajectories
from craft_pl.rollout.watchdog import CallTimeout, Watchdog, clear_stop, request_stop, stop_requested
from tests.test_collector import ScriptedEngine
from tests.test_training_toy import TOY_ARGS
from tests.toy_env import WORDS, PickWordEnv

RELEASE = threading.Event()
"""Set at the end of a test: hung calls of this process return (so their threads end)."""


class HangingPickWordEnv(PickWordEnv):
    """``PickWordEnv`` that misbehaves on purpose (each knob off by default)."""

    def __init__(self, max_turns: int = 2, hang_on: str | None = None, hang_start_on: str | None = None,
                 bad_reward_on: str | None = None, bad_reward: float = 0.0, hang_file: str | None = None) -> None:
        """
        Args:
            max_turns: Turns per episode.
            hang_on: ``step`` never returns when this word is chosen.
            hang_start_on: ``reset`` never returns on the task with this id.
            bad_reward_on: Choosing this word gives the reward ``bad_reward``.
            bad_reward: The reward given on ``bad_reward_on``.
            hang_file: Once this file exists, every ``step`` writes ``<hang_file>.hanging`` and never returns.
        """
        super().__init__(max_turns)
        self.hang_on, self.hang_start_on, self.hang_file = hang_on, hang_start_on, hang_file
        self.bad_reward_on, self.bad_reward = bad_reward_on, bad_reward
        self.closed = False

    def start(self, task: Task) -> str:
        if task.task_id == self.hang_start_on:
            RELEASE.wait()
        return super().start(task)

    def transition(self, action: str | None) -> StepResult:
        if self.hang_file and Path(self.hang_file).exists():
            Path(self.hang_file + ".hanging").touch()
            RELEASE.wait()
        if action is not None and action == self.hang_on:
            RELEASE.wait()
        if action is not None and action == self.bad_reward_on:
            return StepResult("done", self.bad_reward, True, {"valid_action": True, "won": False, "score": 0.0})
        return super().transition(action)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(autouse=True)
def _release_hung_calls():
    RELEASE.clear()
    clear_stop()
    yield
    RELEASE.set()
    clear_stop()


def _action(word: str) -> str:
    return f"<think>x</think><action>{word}</action>"


def _other_words(task_word: str, count: int) -> list[str]:
    return [w for w in WORDS if w != task_word][:count]


def _collect(policy, collector: Collector, tasks: list[Task], group: int, texts: list[str]):
    started = time.perf_counter()
    trajectories = collector.run(tasks, group, policy, ScriptedEngine(texts), SamplingParams(), torch.Generator())
    return trajectories, time.perf_counter() - started


def test_a_step_that_never_returns_ends_only_its_episode_and_the_hung_environment_is_replaced(tiny_policy, caplog):
    task = PickWordEnv().task_panel("train", 1, 0)[0]
    hang, wrong = _other_words(task.payload, 2)
    collector = Collector(lambda: HangingPickWordEnv(max_turns=1, hang_on=hang), 2, env_step_timeout_s=0.3)
    before = collector.environments(4)
    with caplog.at_level(logging.WARNING):
        trajectories, seconds = _collect(tiny_policy, collector, [task], 4,
                                         [_action(hang), _action(task.payload), _action(wrong), "junk"])
    assert seconds < 3.0
    assert [t.env_error for t in trajectories] == [True, False, False, False]
    assert trajectories[0].done and len(trajectories[0].turns) == 1 and trajectories[0].episode_reward == 0.0
    assert [t.won for t in trajectories[1:]] == [True, False, False]
    assert collector.pool[0] is not before[0] and isinstance(collector.pool[0], HangingPickWordEnv)
    assert collector.pool[1:] == before[1:]  # healthy environments are kept
    assert task.task_id in caplog.text and "step" in caplog.text and "timed out" in caplog.text
    batch, _ = rows_from_trajectories(trajectories, penalty=0.1)
    assert torch.isfinite(batch.rewards).all()
    # the next run works on the fresh instance, and the hung one is closed once its call returns
    trajectories, _ = _collect(tiny_policy, collector, [task], 4, [_action(task.payload)] * 4)
    assert all(t.won and not t.env_error for t in trajectories)
    RELEASE.set()
    deadline = time.monotonic() + 5
    while not before[0].closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert before[0].closed


def test_a_reset_that_never_returns_ends_only_that_group(tiny_policy, caplog):
    tasks = PickWordEnv().task_panel("train", 2, 0)
    collector = Collector(lambda: HangingPickWordEnv(max_turns=1, hang_start_on=tasks[1].task_id), 2,
                          env_step_timeout_s=0.2)
    before = collector.environments(4)
    with caplog.at_level(logging.WARNING):
        trajectories, seconds = _collect(tiny_policy, collector, tasks, 2, [_action(tasks[0].payload)] * 2)
    assert seconds < 3.0
    assert [t.env_error for t in trajectories] == [False, False, True, True]
    assert [len(t.turns) for t in trajectories] == [1, 1, 0, 0]
    assert all(t.won for t in trajectories[:2])
    assert collector.pool[:2] == before[:2]
    assert all(new is not old for new, old in zip(collector.pool[2:], before[2:]))
    assert tasks[1].task_id in caplog.text and "reset" in caplog.text


@pytest.mark.parametrize("reward", [math.nan, math.inf, -math.inf])
def test_a_non_finite_reward_ends_its_episode_as_an_environment_error(tiny_policy, caplog, reward):
    task = PickWordEnv().task_panel("train", 1, 0)[0]
    (bad,) = _other_words(task.payload, 1)
    collector = Collector(lambda: HangingPickWordEnv(max_turns=1, bad_reward_on=bad, bad_reward=reward), 2)
    with caplog.at_level(logging.WARNING):
        trajectories, _ = _collect(tiny_policy, collector, [task], 3, [_action(bad), _action(task.payload), "junk"])
    assert [t.env_error for t in trajectories] == [True, False, False]
    assert all(math.isfinite(t.episode_reward) for t in trajectories) and trajectories[1].won
    assert task.task_id in caplog.text and "non-finite reward" in caplog.text
    batch, _ = rows_from_trajectories(trajectories, penalty=0.1)
    assert batch.num_rows == 3 and torch.isfinite(batch.rewards).all()


@pytest.mark.parametrize("timeout_s", [0.0, 30.0])
def test_a_stop_request_interrupts_a_hung_call_with_the_requested_exception(timeout_s):
    class Stop(BaseException):
        pass

    watchdog = Watchdog(timeout_s, poll_s=0.05)
    assert watchdog.call(lambda x: x * 2, 21) == 42
    with pytest.raises(ZeroDivisionError):  # the call's own error comes back as is
        watchdog.call(lambda: 1 / 0)
    threading.Timer(0.2, request_stop, args=(Stop,)).start()
    started = time.perf_counter()
    with pytest.raises(Stop):
        watchdog.call(RELEASE.wait)
    assert time.perf_counter() - started < 1.0 and stop_requested()
    with pytest.raises(Stop):  # until cleared, every later call stops at once
        watchdog.call(int)
    clear_stop()
    assert watchdog.call(int, "7") == 7  # a fresh worker serves the next call


def test_watchdog_times_out_and_its_workers_never_block_exit():
    watchdog = Watchdog(0.2)
    with pytest.raises(CallTimeout, match="0.2 s"):
        watchdog.call(RELEASE.wait)
    assert watchdog.call(int, "3") == 3
    hung = [t for t in threading.enumerate() if t.name == "craft-watchdog" and t.is_alive()]
    assert hung and all(t.daemon for t in hung)
    with pytest.raises(ValueError, match="timeout_s"):
        Watchdog(-1.0)


def test_bad_timeouts_are_refused_naming_the_key():
    with pytest.raises(ValueError, match="data.env_step_timeout_s"):
        RolloutDataModule(PickWordEnv, env_step_timeout_s=-1.0)
    assert RolloutDataModule(PickWordEnv).experience.collector.watchdog.timeout_s == 60.0
    assert RolloutDataModule(PickWordEnv, env_step_timeout_s=0).experience.collector.watchdog.timeout_s == 0.0


def test_search_qa_bounds_a_search_by_retrieval_total_timeout_s():
    from craft_pl.envs.search_qa import RetrievalServerError, SearchQAEnv
    from craft_pl.envs.search_qa.env import clear_caches

    with pytest.raises(ValueError, match="retrieval_total_timeout_s"):
        SearchQAEnv(num_entities=100, retrieval_total_timeout_s=0)
    clear_caches()
    try:
        with socket.socket() as listener:  # accepts connections, never answers
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            url = f"http://127.0.0.1:{listener.getsockname()[1]}/retrieve"
            started = time.perf_counter()
            with pytest.raises(RetrievalServerError):  # the connection check is a search like any other
                SearchQAEnv(num_entities=100, retrieval_url=url, retrieval_timeout_s=5, retrieval_retries=3,
                            retrieval_total_timeout_s=0.5)
            assert time.perf_counter() - started < 2.0
    finally:
        clear_caches()


# ---------------------------------------------------------------- a signal while an environment call hangs
@pytest.fixture(scope="module")
def warm_start_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("warm_start_cache")


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
def test_a_signal_during_a_hung_step_saves_interrupted_ckpt_and_exits(tmp_path, warm_start_cache, signal_number):
    root, hang_file = tmp_path / "run", tmp_path / "hang"
    args = [sys.executable, "-m", "craft_pl", "fit", *TOY_ARGS, "--data.env=tests.test_env_timeouts.HangingPickWordEnv",
            f"--data.env.init_args.hang_file={hang_file}", "--data.env_step_timeout_s=600",
            f"--trainer.default_root_dir={root}", "--trainer.max_epochs=100000", "--data.val_tasks=1",
            "--trainer.check_val_every_n_epoch=100000", f"--model.policy.warm_start.cache_dir={warm_start_cache}"]
    process = subprocess.Popen(args, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not list(root.rglob("epoch=*.ckpt")) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        hang_file.touch()  # an RL step has completed: from now on every environment step hangs
        marker = Path(f"{hang_file}.hanging")
        while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        if not marker.exists():
            process.kill()
            pytest.fail("the environment never started hanging:\n" + process.communicate()[0][-3000:])
        time.sleep(0.5)  # the rollout now waits on the hung call
        process.send_signal(signal_number)
        sent = time.monotonic()
        output, _ = process.communicate(timeout=30)
        seconds = time.monotonic() - sent
    finally:
        process.kill()  # never leave a hung 100000-step run behind when the test fails
    # the stop itself takes a poll slice; the rest is the interpreter's exit (torch & co.: ~3.5 s on a loaded CPU)
    assert seconds < 15, f"took {seconds:.1f} s to exit after the signal"
    (interrupted,) = root.rglob("interrupted.ckpt")
    assert "resume with" in output
    saved = torch.load(interrupted, map_location="cpu", weights_only=False)
    assert saved["epoch"] >= 0 and saved["global_step"] == 2 * (saved["epoch"] + 1)
