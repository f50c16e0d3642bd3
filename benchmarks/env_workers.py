"""What ``data.env_workers: process`` costs per environment step, against in-process environments (``thread``).

Replays the collector's environment traffic per turn (``prompt``, ``anchor``, ``max_turns``, ``admissible_actions``
for the expert, ``parse_action``, ``step`` under the watchdog) on WebShop with its expert, once with the
environment in this process and once in a worker process (``craft_pl.rollout.env_process``); also the one-time cost
of starting a worker. No model: generation costs the same either way.

    OMP_NUM_THREADS=1 python -m benchmarks.env_workers            # writes benchmarks/results/env_workers.json
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

from craft_pl.envs.webshop import WebShopEnv
from craft_pl.rollout.env_process import ProcessEnv
from craft_pl.rollout.watchdog import Watchdog

RESULTS = Path(__file__).resolve().parent / "results" / "env_workers.json"


def turns_per_second(env, expert, tasks, watchdog: Watchdog) -> tuple[int, float]:
    """Turns played and seconds spent on environment traffic (the expert's own thinking excluded)."""
    turns, seconds = 0, 0.0
    for task in tasks:
        started = time.perf_counter()
        observation = watchdog.call(env.reset, task)
        seconds += time.perf_counter() - started
        expert.reset(task.instruction)
        history: list = []
        for turn in range(env.max_turns):
            started = time.perf_counter()
            env.prompt(task, history, observation, turn)
            env.anchor(observation)
            admissible = env.admissible_actions
            seconds += time.perf_counter() - started
            action = expert.act(observation, admissible)
            started = time.perf_counter()
            parsed, _ = env.parse_action(env.format_response(action))
            result = watchdog.call(env.step, parsed)
            seconds += time.perf_counter() - started
            turns += 1
            observation = result.observation
            if result.done:
                break
    return turns, seconds


def main() -> None:
    factory = lambda: WebShopEnv(num_products=2000)  # noqa: E731 - forked into the worker, never pickled
    tasks = factory().task_panel("train", 200, 0)
    watchdog = Watchdog(60.0)
    runs = []
    for mode in ("thread", "process", "thread", "process"):  # twice each, interleaved
        started = time.perf_counter()
        env = factory() if mode == "thread" else ProcessEnv(factory)
        build_s = time.perf_counter() - started
        expert = WebShopEnv(num_products=2000).make_expert()
        turns, seconds = turns_per_second(env, expert, tasks, watchdog)
        runs.append({"mode": mode, "build_s": round(build_s, 4), "turns": turns,
                     "env_ms_per_turn": round(1000 * seconds / turns, 4)})
        if isinstance(env, ProcessEnv):
            env.close()
    by_mode = {mode: statistics.mean(r["env_ms_per_turn"] for r in runs if r["mode"] == mode)
               for mode in ("thread", "process")}
    record = {
        "benchmark": "env_workers",
        "machine": f"{platform.machine()}, 1 thread ({platform.processor() or 'cpu'})",
        "environment": "WebShopEnv(num_products=2000), expert actions, 200 tasks",
        "runs": runs,
        "env_ms_per_turn": {mode: round(value, 4) for mode, value in by_mode.items()},
        "added_ms_per_turn": round(by_mode["process"] - by_mode["thread"], 4),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
