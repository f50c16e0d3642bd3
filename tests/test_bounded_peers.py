"""Hostile peers cost little: the retrieval client reads at most ``max_answer_bytes`` of an answer and cuts passages
at ``max_passage_chars``; the server bounds its ranking cache by bytes, serves at most ``max_connections`` at once
and drops a sender whose request has not arrived ``request_timeout_s`` after it began. Loopback only, each test
bounded in connections and seconds."""

import contextlib
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from craft_pl.envs.search_qa import HTTPRetriever, RetrievalServerError
from craft_pl.envs.search_qa.retrieval import BM25Retriever
from craft_pl.envs.search_qa.server import ServerLimits, answer, make_server
from craft_pl.envs.search_qa.world import Passage, build_world


@contextlib.contextmanager
def _serving(httpd):
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        yield host, port
    finally:
        httpd.shutdown()
        httpd.server_close()


class _Flood(BaseHTTPRequestHandler):
    """Answers with ``total`` bytes of an endless-looking JSON string, declaring no length (read until close)."""

    total = 0
    declared: int | None = None
    sent: list = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        if self.declared is not None:
            self.send_header("Content-Length", str(self.declared))
        self.send_header("Connection", "close")
        self.end_headers()
        chunk, sent = b"x" * (1 << 16), 0
        try:
            self.wfile.write(b'{"result": "')
            while sent < self.total:
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass
        self.sent.append(sent)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize("declared", [None, 10**12])
def test_the_client_stops_reading_an_endless_answer_at_its_cap(declared):
    """Guards: the client read an endless answer until 1.85 GB (8 s)."""
    handler = type("Flood", (_Flood,), {"total": 64 << 20, "declared": declared, "sent": []})
    with _serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as (host, port):
        client = HTTPRetriever(f"http://{host}:{port}/retrieve", retries=2, max_answer_bytes=1 << 20)
        started = time.perf_counter()
        with pytest.raises(RetrievalServerError, match="max_answer_bytes=1048576") as error:
            client.retrieve(["q"], 3)
        assert time.perf_counter() - started < 5
    assert "after 1 attempt" in str(error.value)  # retrying would read it again


class _OnePassage(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"result": [[{"document": {"id": 1, "contents": "Title\n" + "y" * (4 << 20)},
                                        "score": 1.0}]]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_the_client_cuts_a_huge_passage():
    """Guards: the client accepted a 512 MB passage into an observation."""
    with _serving(ThreadingHTTPServer(("127.0.0.1", 0), _OnePassage)) as (host, port):
        client = HTTPRetriever(f"http://{host}:{port}/retrieve", max_passage_chars=1000)
        (passages,) = client.retrieve(["q"], 3)
    assert passages[0].title == "Title" and len(passages[0].contents) <= 1000


def _cache_size(retriever: BM25Retriever) -> int:
    """The ranking cache's memory as Python reports it (keys, their strings, values)."""
    total = 0
    for key, value in retriever._cache.items():
        total += sys.getsizeof(key) + sum(sys.getsizeof(token) for token in key) + sys.getsizeof(value)
        total += sum(sys.getsizeof(pair) + sys.getsizeof(pair[0]) + sys.getsizeof(pair[1]) for pair in value)
    return total


def test_the_server_ranking_cache_is_bounded_by_bytes():
    """Guards: every 1 MiB request added ~24 MB to the ranking cache (about 1,000 requests exhausted 24 GB)."""
    passages = [Passage(str(i), f"title {i}", f"word{i} common text") for i in range(50)]
    retriever = BM25Retriever(passages, max_cache_bytes=2 << 20)
    for request in range(30):
        query = " ".join(f"tok{request}x{i}" for i in range(4000)) + " common"  # ~40 KB of distinct tokens
        answer(retriever, {"queries": [query], "topk": 3})
    assert retriever.cache_bytes <= 2 << 20 and _cache_size(retriever) <= 2 << 20
    huge = " ".join(f"huge{i}" for i in range(100_000))  # over 1/16 of the bound: not cached at all
    answer(retriever, {"queries": [huge], "topk": 3})
    assert _cache_size(retriever) <= 2 << 20
    assert answer(retriever, {"queries": ["word3"], "topk": 1})["result"][0][0]["id"] == "3"


@pytest.fixture(scope="module")
def passages():
    return build_world(60, 0, 0.3, 0.3).passages


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def test_the_server_serves_at_most_max_connections_and_refuses_more_at_once(passages):
    """Guards: 800 clients holding connections open held 800 server threads."""
    limits = ServerLimits(max_connections=4, read_timeout_s=5, request_timeout_s=5)
    with _serving(make_server(BM25Retriever(passages), "127.0.0.1", 0, limits)) as (host, port):
        idle = [_connect(port) for _ in range(4)]
        time.sleep(0.2)  # all four are being served (each by its thread, waiting for a request line)
        with _connect(port) as extra:
            started = time.perf_counter()
            reply = b"".join(iter(lambda: extra.recv(65536), b""))
            assert reply.startswith(b"HTTP/1.1 503") and b"max_connections" in reply
            assert time.perf_counter() - started < 1
        for sock in idle:
            sock.close()
        time.sleep(0.3)
        client = HTTPRetriever(f"http://{host}:{port}/retrieve", retries=0)
        assert client.retrieve(["anything"], 1) is not None


def test_the_server_drops_a_slow_sender_after_request_timeout(passages):
    """Guards: a client sending one byte just within every read timeout held its connection (and thread) forever."""
    limits = ServerLimits(read_timeout_s=0.6, request_timeout_s=1.0)
    with _serving(make_server(BM25Retriever(passages), "127.0.0.1", 0, limits)) as (host, port):
        with _connect(port) as slow:
            slow.sendall(b"POST /retrieve HTTP/1.1\r\n")
            started, closed = time.perf_counter(), False
            while time.perf_counter() - started < 4:
                try:
                    slow.sendall(b"X")  # a header byte every 0.2 s: each read gets data in time
                    slow.settimeout(0.2)
                    if slow.recv(65536) == b"":
                        closed = True
                        break
                except socket.timeout:
                    continue
                except OSError:
                    closed = True
                    break
            assert closed and time.perf_counter() - started < 2.5
        client = HTTPRetriever(f"http://{host}:{port}/retrieve", retries=0)
        assert client.retrieve(["anything"], 1) is not None
