"""ALFWorld environment speed on the real engine: the walkthrough expert plays generated games, one core.

Usage: OMP_NUM_THREADS=1 python -m benchmarks.env_steps_alfworld [--games 36] [--rooms 5 0]
For each room size (receptacles per room; 0 = the whole floor plan) it generates ``--games`` games into a fresh
temporary cache (timing generation: sampling, the planner's walkthrough and its replay), then lets the expert play
each through ``AlfWorldEnv`` and times ``reset`` and ``step`` separately. Writes
benchmarks/results/env_steps_alfworld.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from craft_pl.envs.alfworld import AlfWorldEnv
from craft_pl.envs.alfworld.env import clear_caches
from benchmarks.env_steps import expert_play
from craft_pl.envs.base import Task

RESULT = Path(__file__).resolve().parent / "results" / "env_steps_alfworld.json"
ROOM = {"num_distractors": 2, "max_plan_length": 8, "max_turns": 12}
"""configs/alfworld.yaml's settings besides the room size."""


def measure(games: int, receptacles: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        clear_caches()
        env = AlfWorldEnv(cache_dir=cache, train_games=games, num_receptacles=receptacles, **ROOM)
        start = time.perf_counter()
        pool = env.pool("train")
        generation_s = time.perf_counter() - start
        tasks = [Task(f"benchmark/{i}", game.task_type, game.goal, game) for i, game in enumerate(pool)]
        played = expert_play(env, tasks)
        env.close()
    return {
        "num_receptacles": receptacles,
        "games_generated": len(pool),
        "game_slots": games,
        "generation_s_per_game": round(generation_s / games, 3),
        **played,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=36)
    parser.add_argument("--rooms", type=int, nargs="+", default=[5, 0])
    args = parser.parse_args()
    runs = [measure(args.games, rooms) for rooms in args.rooms]
    result = {"benchmark": "env_steps_alfworld", "machine": f"{platform.machine()}, 1 thread", "runs": runs}
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
