"""WebShop environment speed, measured like Search-QA's: the expert plays, one thread, only reset/step timed.

Usage: OMP_NUM_THREADS=1 python -m benchmarks.env_steps_webshop [--episodes 300]
Settings are configs/webshop.yaml's (2000 products, 8 turns). Writes benchmarks/results/env_steps_webshop.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from benchmarks.env_steps import expert_play
from craft_pl.envs.webshop import WebShopEnv
from craft_pl.envs.webshop.env import clear_caches

RESULT = Path(__file__).resolve().parent / "results" / "env_steps_webshop.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=300)
    args = parser.parse_args()
    clear_caches()
    start = time.perf_counter()
    env = WebShopEnv(num_products=2000, max_turns=8, privileged="hint")
    tasks = env.task_panel("train", args.episodes, 0)
    build_s = time.perf_counter() - start
    runs = [dict({"num_products": 2000, "build_s_with_goal_panel": round(build_s, 3), "pass": "first"},
                 **expert_play(env, tasks)),
            dict({"num_products": 2000, "pass": "second (search cache warm)"}, **expert_play(env, tasks))]
    result = {"benchmark": "env_steps_webshop", "machine": f"{platform.machine()}, 1 thread", "runs": runs}
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
