"""Shared timing loop of the environment-speed benchmarks: the expert plays, only ``reset`` and ``step`` are timed."""

from __future__ import annotations

import time

from craft_pl.envs.base import AgentEnv, Task


def expert_play(env: AgentEnv, tasks: list[Task]) -> dict:
    """Episodes, steps, expert success, environment steps per second (without and with resets)."""
    expert = env.make_expert()
    reset_s = step_s = 0.0
    steps = wins = 0
    for task in tasks:
        start = time.perf_counter()
        observation = env.reset(task)
        reset_s += time.perf_counter() - start
        expert.reset(task.instruction)
        for _ in range(env.max_turns):
            action = expert.act(observation, env.admissible_actions)
            start = time.perf_counter()
            result = env.step(action)
            step_s += time.perf_counter() - start
            steps += 1
            observation = result.observation
            if result.done:
                break
        wins += bool(result.info.get("won", False))
    return {
        "episodes": len(tasks),
        "expert_success": round(wins / max(1, len(tasks)), 3),
        "steps": steps,
        "steps_per_s": round(steps / max(step_s, 1e-9), 1),
        "steps_per_s_with_resets": round(steps / max(step_s + reset_s, 1e-9), 1),
        "reset_s": round(reset_s / max(1, len(tasks)), 3),
    }
