"""The HTTP retriever against a real retrieval server on 127.0.0.1 (our BM25 behind Search-R1's protocol), the error
when no server answers, the server's command line, and a smoke ``fit`` of configs/search_qa.yaml."""

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from craft_pl.cli import main
from craft_pl.envs.search_qa import HTTPRetriever, RetrievalServerError, SearchQAEnv
from craft_pl.envs.search_qa.env import clear_caches
from craft_pl.envs.search_qa.server import make_server
from tests.tb import read_scalars

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module")
def server():
    """Our BM25 retriever over the built-in world, served on a free port of 127.0.0.1 in a background thread."""
    local = SearchQAEnv(num_entities=300)
    httpd = make_server(local.retriever, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    yield local, f"http://{host}:{port}/retrieve"
    httpd.shutdown()
    httpd.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_round_trip_matches_in_process_bm25(server):
    local, url = server
    remote = HTTPRetriever(url, timeout_s=5)
    queries = [t.instruction for t in local.task_panel("val", 20, 0)] + ["no such words zzzz"]
    assert remote.retrieve(queries, 3) == local.retriever.retrieve(queries, 3)
    assert remote.retrieve(queries[:1], 1) == local.retriever.retrieve(queries[:1], 1)


def test_the_wire_format_is_search_r1s(server):
    local, url = server
    name = local.world.by_kind["person"][0]
    for with_scores in (True, False):
        request = urllib.request.Request(url, method="POST", headers={"Content-Type": "application/json"},
                                         data=json.dumps({"queries": [name], "topk": 2,
                                                          "return_scores": with_scores}).encode())
        with urllib.request.urlopen(request, timeout=5) as response:
            result = json.loads(response.read())["result"]
        hit = result[0][0]
        document = hit["document"] if with_scores else hit
        assert document["contents"].split("\n")[0] == name and set(document) == {"id", "contents"}
        assert (isinstance(hit.get("score"), float)) is with_scores
    with urllib.request.urlopen(url.replace("/retrieve", "/health"), timeout=5) as response:
        assert json.loads(response.read()) == {"status": "ok", "passages": len(local.world.passages)}


def test_environment_plays_through_the_server_and_the_expert_still_wins(server):
    local, url = server
    clear_caches()
    remote = SearchQAEnv(num_entities=300, retrieval_url=url)
    assert isinstance(remote.retriever, HTTPRetriever)
    wins = []
    for task in remote.task_panel("val", 24, 0):
        expert, observation = remote.make_expert(), remote.reset(task)
        expert.reset(task.instruction)
        for _ in range(remote.max_turns):
            result = remote.step(expert.act(observation, remote.admissible_actions))
            observation = result.observation
            if result.done:
                break
        wins.append(result.info["won"])
    assert sum(wins) >= 23


def test_malformed_requests_get_a_400_that_is_not_retried(server):
    _, url = server
    request = urllib.request.Request(url, method="POST", data=json.dumps({"queries": "not a list"}).encode())
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 400
    started = time.perf_counter()
    with pytest.raises(RetrievalServerError, match="failed after 1 attempt"):
        HTTPRetriever(url.replace("/retrieve", "/nowhere"), retries=3, backoff_s=1.0).retrieve(["x"], 3)
    assert time.perf_counter() - started < 1.0


def test_unreachable_server_names_the_address_and_the_fix():
    url = f"http://127.0.0.1:{_free_port()}/retrieve"
    started = time.perf_counter()
    with pytest.raises(RetrievalServerError) as error:
        HTTPRetriever(url, timeout_s=1, retries=2, backoff_s=0.05).retrieve(["query"], 3)
    message = str(error.value)
    assert url in message and "failed after 3 attempt(s)" in message
    assert "python -m craft_pl.envs.search_qa.server" in message
    assert 0.15 <= time.perf_counter() - started < 5  # backoff 0.05 s then 0.1 s
    clear_caches()
    with pytest.raises(RetrievalServerError, match=url):  # the environment checks its server when it is built
        SearchQAEnv(num_entities=100, retrieval_url=url, retrieval_retries=0)


def test_server_command_line_serves_a_corpus_file(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "7", "contents": '"Brellin"\nBrellin is a harbour town.'}) + "\n")
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "craft_pl.envs.search_qa.server", "--port", str(port),
                                "--corpus", str(corpus)], stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert f"serving 1 passages at http://127.0.0.1:{port}/retrieve" in line
        passages = HTTPRetriever(f"http://127.0.0.1:{port}/retrieve", retries=0).retrieve(["harbour"], 3)[0]
        assert [(p.doc_id, p.title, p.text) for p in passages] == [("7", "Brellin", "Brellin is a harbour town.")]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_smoke_fit_with_craft_logs_success_per_data_source(tmp_path):
    clear_caches()
    main(["fit", "--config", str(CONFIGS / "search_qa.yaml"), "--config", str(CONFIGS / "method" / "craft.yaml"),
          "--config", str(CONFIGS / "smoke.yaml"), f"--trainer.default_root_dir={tmp_path / 'run'}",
          f"--model.policy.init_args.warm_start.cache_dir={tmp_path / 'cache'}", "--data.val_tasks=8",
          "--data.val_privileged=false",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
    scalars = read_scalars(tmp_path / "run")
    assert len(scalars["train/loss"]) == 2 * 2
    per_kind = [tag for tag in scalars if tag.startswith(("rollout/success_rate/", "val/success_rate/"))]
    assert any(tag.startswith("val/success_rate/") for tag in per_kind)
    kinds = {tag.rsplit("/", 1)[1] for tag in per_kind}
    assert kinds and kinds <= {"single_hop", "bridge", "comparison", "attribute"}
    assert scalars["teacher/context_tokens"][0][1] > 0  # CRAFT's teacher reads the hint
