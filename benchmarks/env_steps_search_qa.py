"""Search-QA environment speed: the expert plays, one thread; in-process BM25 (cold and warm ranking cache) and the
HTTP retriever against our server on 127.0.0.1.

Usage: OMP_NUM_THREADS=1 python -m benchmarks.env_steps_search_qa [--episodes 500] [--entities 300 5000]
Writes benchmarks/results/env_steps_search_qa.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from pathlib import Path

from benchmarks.env_steps import expert_play
from craft_pl.envs.search_qa import SearchQAEnv
from craft_pl.envs.search_qa.env import clear_caches
from craft_pl.envs.search_qa.server import make_server

RESULT = Path(__file__).resolve().parent / "results" / "env_steps_search_qa.json"


def measure(entities: int, episodes: int) -> list[dict]:
    clear_caches()
    start = time.perf_counter()
    env = SearchQAEnv(num_entities=entities)
    build_s = time.perf_counter() - start
    tasks = env.task_panel("train", episodes, 0)
    common = {"num_entities": entities, "passages": len(env.world.passages), "build_s": round(build_s, 3)}
    env.retriever.clear_cache()
    runs = [dict(common, retriever="bm25, first pass (ranking cache empty at start)", **expert_play(env, tasks))]
    runs.append(dict(common, retriever="bm25, second pass (every ranking cached, as for sibling rollouts)",
                     **expert_play(env, tasks)))
    env.retriever.clear_cache()
    server = make_server(env.retriever, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        remote = SearchQAEnv(num_entities=entities, retrieval_url=f"http://{host}:{port}/retrieve")
        runs.append(dict(common, retriever="http to our server on 127.0.0.1", **expert_play(remote, tasks)))
    finally:
        server.shutdown()
        server.server_close()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--entities", type=int, nargs="+", default=[300, 5000])
    args = parser.parse_args()
    runs = [run for entities in args.entities for run in measure(entities, args.episodes)]
    result = {"benchmark": "env_steps_search_qa", "machine": f"{platform.machine()}, 1 thread", "runs": runs}
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
