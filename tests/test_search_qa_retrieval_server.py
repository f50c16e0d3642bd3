"""The HTTP retriever against a real retrieval server on 127.0.0.1 (our BM25 behind Search-R1's protocol), the error
when no server answers, the server's command line, and a smoke ``fit`` of configs/search_qa.yaml."""

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from craft_pl.cli import main
from craft_pl.envs.search_qa import HTTPRetriever, RetrievalServerError, SearchQAEnv
from craft_pl.envs.search_qa.env import clear_caches
from craft_pl.envs.search_qa.retrieval import BM25Retriever
from craft_pl.envs.search_qa.server import ServerLimits, make_server
from craft_pl.envs.search_qa.server import main as server_main
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
        health = json.loads(response.read())
        assert health["status"] == "ok" and health["passages"] == len(local.world.passages) and health["corpus_digest"]


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


@pytest.mark.slow
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


# --- Limits and hardening: every test runs its own server on a free port with small limits. ---

SMALL = ServerLimits(max_body_bytes=2000, max_queries=4, max_topk=5, read_timeout_s=0.5)


@contextlib.contextmanager
def _serving(httpd):
    """``httpd`` serving in a background thread; yields its ``/retrieve`` address."""
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)  # quick to shut down
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/retrieve"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def small_server(server):
    local, _ = server
    with _serving(make_server(local.retriever, "127.0.0.1", 0, SMALL)) as url:
        yield url


def _post(url: str, payload: object) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _raw(url: str, data: bytes, timeout_s: float = 5.0) -> bytes:
    """Sends ``data`` as is and reads until the server closes (a socket timeout fails the test)."""
    port = int(url.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_oversized_bodies_get_a_413_naming_the_limit(server, small_server):
    status, answer = _post(small_server, {"queries": ["x" * 5000]})
    assert status == 413 and "2000 bytes" in answer["error"]
    status, answer = _post(server[1], {"queries": ["word " * 220_000]})  # over the default 1 MiB
    assert status == 413 and "1048576 bytes" in answer["error"]


def test_query_count_and_topk_are_capped(small_server):
    status, answer = _post(small_server, {"queries": ["a"] * 5, "topk": 3})
    assert status == 413 and "limit is 4" in answer["error"]
    status, answer = _post(small_server, {"queries": ["a"], "topk": 6})
    assert status == 400 and "[1, 5]" in answer["error"]
    assert _post(small_server, {"queries": ["a"] * 4, "topk": 5})[0] == 200
    with pytest.raises(RetrievalServerError, match=r"failed after 1 attempt\(s\).*HTTP 413.*limit is 4"):
        HTTPRetriever(small_server, retries=3).retrieve(["a"] * 5, 3)


@pytest.mark.parametrize("length, status", [("-1", 400), ("abc", 400), ("1.5", 400), ("1_5", 400), ("\u00b2", 400),
                                            (None, 400), ("9" * 5000, 413)])
def test_a_bad_or_missing_content_length_gets_a_400(small_server, length, status):
    header = "" if length is None else f"Content-Length: {length}\r\n"
    request = f"POST /retrieve HTTP/1.1\r\nHost: x\r\n{header}\r\n".encode("latin-1") + b'{"queries": []}'
    answer = _raw(small_server, request)
    assert answer.startswith(f"HTTP/1.0 {status}".encode()) and b"Content-Length" in answer.split(b"\r\n\r\n")[1]


def test_deep_nesting_gets_a_400_and_the_server_keeps_serving(server):
    local, url = server
    status, answer = _post(url, b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nested too deeply" in answer["error"]
    assert _post(url, b'{"queries": ["a"], "topk": "many"}')[0] == 400
    assert _post(url, b"[1, 2]")[0] == 400 and _post(url, b"\xff")[0] == 400
    assert HTTPRetriever(url).retrieve(["x"], 1) == local.retriever.retrieve(["x"], 1)


def test_a_half_sent_request_is_dropped_after_the_read_timeout_while_others_are_served(server, small_server):
    port = int(small_server.split(":")[2].split("/")[0])
    half_body = socket.create_connection(("127.0.0.1", port))
    half_body.sendall(b"POST /retrieve HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"queries\"")
    half_head = socket.create_connection(("127.0.0.1", port))
    half_head.sendall(b"POST /retrieve HTTP/1.1\r\nContent-")
    started = time.perf_counter()
    assert HTTPRetriever(small_server, timeout_s=2).retrieve(["x"], 1) == server[0].retriever.retrieve(["x"], 1)
    for sock, expected in ((half_body, b"HTTP/1.0 408"), (half_head, b"")):
        with sock:
            sock.settimeout(5)
            answer = b"".join(iter(lambda: sock.recv(65536), b""))  # noqa: B023 - read until the server closes
            assert answer.startswith(expected)
    assert 0.4 <= time.perf_counter() - started < 3  # read_timeout_s = 0.5


class _SlowBM25(BM25Retriever):
    """Takes 2 ms per query and says when a large batch has started."""

    def __init__(self, passages) -> None:
        super().__init__(passages)
        self.batch_started = threading.Event()

    def ranking(self, query: str, top_k: int):
        if query.startswith("batch"):
            self.batch_started.set()
        time.sleep(0.002)
        return super().ranking(query, top_k)


def test_a_large_batch_does_not_hold_off_a_small_concurrent_request(server):
    retriever = _SlowBM25(server[0].world.passages)
    finished = []
    with _serving(make_server(retriever, "127.0.0.1", 0, ServerLimits(max_queries=500))) as url:
        batch = threading.Thread(target=lambda: finished.append(("batch", _post(url, {"queries": [
            f"batch {i}" for i in range(500)]})[0])))
        batch.start()
        assert retriever.batch_started.wait(5)
        finished.append(("small", _post(url, {"queries": ["small"]})[0]))
        batch.join(10)
    assert finished == [("small", 200), ("batch", 200)]  # the batch takes >= 1 s, the small request ~2 ms


class _CannedAnswer(BaseHTTPRequestHandler):
    body = b""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("answer, message", [
    ({"result": [5]}, "result[0] is 5, expected a list of documents"),
    ({"result": ["abc"]}, "result[0] is 'abc', expected a list of documents"),
    ({"result": [["a doc"]]}, "result[0][0] is 'a doc', expected a document"),
    ({"result": [[{"document": "a doc", "score": 1.0}]]}, "result[0][0]['document'] is 'a doc', expected a dict"),
    ({"result": [[{"document": {"id": "1"}}]]}, "result[0][0]['document']['contents'] is None, expected a string"),
    ({"result": [[{"id": [1], "contents": "T\nx"}]]}, "result[0][0]['id'] is [1], expected a string"),
    ({"result": [[], []]}, "result has 2 lists for 1 queries"),
    ({"results": []}, "expected a dict with a 'result' list"),
])
def test_answers_outside_the_protocol_raise_naming_what_is_wrong(answer, message):
    handler = type("Handler", (_CannedAnswer,), {"body": json.dumps(answer).encode()})
    with _serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as url:
        with pytest.raises(RetrievalServerError, match=re.escape(message)):
            HTTPRetriever(url, retries=0).retrieve(["query"], 3)
        handler.body = json.dumps({"result": [[{"document": {"id": 7, "contents": "T\nx"}, "score": 1.0}]]}).encode()
        assert [(p.doc_id, p.title, p.text) for p in HTTPRetriever(url).retrieve(["q"], 3)[0]] == [("7", "T", "x")]


def _stalling_server(listener: socket.socket, stop: threading.Event) -> None:
    """Accepts one connection and sends its status line a byte every 0.2 s (each read gets data in time)."""
    connection, _ = listener.accept()
    with connection:
        for byte in b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n[]":
            if stop.wait(0.2):
                return
            connection.sendall(bytes([byte]))


@pytest.mark.parametrize("behaviour", ["silent", "a byte at a time"])
def test_a_server_that_never_answers_fails_within_the_total_bound(behaviour):
    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel accepts connections; a silent server never reads or answers them
        if behaviour != "silent":
            threading.Thread(target=_stalling_server, args=(listener, stop), daemon=True).start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/retrieve"
        retriever = HTTPRetriever(url, timeout_s=5, retries=3, backoff_s=0.1, total_timeout_s=1)
        started = time.perf_counter()
        with pytest.raises(RetrievalServerError, match=r"within total_timeout_s=1"):
            retriever.retrieve(["query"], 3)
        stop.set()
    assert 0.9 <= time.perf_counter() - started < 2.5


def test_the_command_line_shows_the_limits(capsys):
    with pytest.raises(SystemExit):
        server_main(["--help"])
    usage = capsys.readouterr().out
    for option in ("--max-body-bytes", "--max-queries", "--max-topk", "--read-timeout-s", "1048576", "256"):
        assert option in usage
    with pytest.raises(ValueError, match="must be positive"):
        ServerLimits(max_queries=0)
    with pytest.raises(ValueError, match="total_timeout_s"):
        HTTPRetriever(total_timeout_s=0)
