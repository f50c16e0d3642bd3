"""A Search-R1-style retrieval server over our BM25 retriever, on the standard library's ``http.server``.

    python -m craft_pl.envs.search_qa.server --port 8000 --config configs/search_qa.yaml   # the world a config uses
    python -m craft_pl.envs.search_qa.server --port 8000 --num-entities 1000               # a built-in world
    python -m craft_pl.envs.search_qa.server --port 8000 --corpus wiki.jsonl               # your corpus (wiki-18)

``POST /retrieve`` takes ``{"queries": [...], "topk": k, "return_scores": bool}`` and answers
``{"result": [[{"document": {"id", "contents"}, "score": s}, ...], ...]}`` (bare documents without scores), as
Search-R1's server does; ``GET /health`` answers ``{"status": "ok", "passages": n, "corpus_digest": d, ...}`` with
what it serves (the built-in world's ``num_entities`` and ``seed``, or the ``corpus`` file): a client configured for
another world refuses to train (``HTTPRetriever.check_world``).

Every request is bounded: its body (``ServerLimits.max_body_bytes``, else 413), its queries (``max_queries``, else
413) and ``topk`` (``max_topk``, else 400); a connection silent for ``read_timeout_s`` is dropped, and so is one
whose request has not fully arrived ``request_timeout_s`` after it began (a sender of a byte every few seconds);
at most ``max_connections`` connections are served at once (more get a 503 at once); the ranking cache holds at most
``max_cache_bytes``; any malformed body (bad ``Content-Length``, invalid or too deeply nested JSON, wrong fields)
gets a 400 with the reason. Queries of a batch are ranked one at a time under the lock, so a large batch never holds
off a small concurrent request.
"""

from __future__ import annotations

import argparse
import inspect
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from craft_pl.envs.search_qa.retrieval import BM25Retriever, load_corpus, world_identity
from craft_pl.envs.search_qa.world import build_world

_DRAIN_S = 2.0  # after refusing an oversized body, read (and drop) the rest for this long so the client sees the 413
_DRAIN_BYTES = 64 << 20


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of the server."""

    max_body_bytes: int = 1 << 20  # request body size (1 MiB); larger bodies get a 413
    max_queries: int = 256  # queries per request; more get a 413
    max_topk: int = 50  # largest ``topk``; larger ones get a 400
    read_timeout_s: float = 10.0  # a connection that sends nothing for this long is dropped
    request_timeout_s: float = 30.0  # a request (line, headers, body) not fully arrived after this long is dropped
    max_connections: int = 64  # connections served at once; more get a 503 at once
    max_cache_bytes: int = 64 << 20  # memory of the ranking cache (oldest entries go first)

    def __post_init__(self) -> None:
        if (min(self.max_body_bytes, self.max_queries, self.max_topk, self.max_connections, self.max_cache_bytes) < 1
                or not self.read_timeout_s > 0 or not self.request_timeout_s > 0):
            raise ValueError(f"ServerLimits: every limit must be positive, got {self}")


class RequestError(ValueError):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def answer(retriever: BM25Retriever, request: object, limits: ServerLimits = ServerLimits(),
           lock: threading.Lock | None = None) -> dict:
    """The protocol's answer to one decoded request (raises ``RequestError`` on a malformed or oversized one).

    ``lock``, when given, is held while one query is ranked, never across the whole batch."""
    if not isinstance(request, dict):
        raise RequestError(400, f"the body must be a JSON object, got {type(request).__name__}")
    queries, top_k = request.get("queries"), request.get("topk", 3)
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise RequestError(400, "'queries' must be a list of strings")
    if len(queries) > limits.max_queries:
        raise RequestError(413, f"{len(queries)} queries in one request; the limit is {limits.max_queries} "
                                "(send them in smaller batches)")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= limits.max_topk:
        raise RequestError(400, f"'topk' must be an int in [1, {limits.max_topk}], got {top_k!r}")
    with_scores = bool(request.get("return_scores", False))
    results = []
    for query in queries:
        if lock is None:
            ranking = retriever.ranking(query, top_k)
        else:
            with lock:
                ranking = retriever.ranking(query, top_k)
        hits = []
        for index, score in ranking:
            passage = retriever.passages[index]
            document = {"id": passage.doc_id, "contents": passage.contents}
            hits.append({"document": document, "score": score} if with_scores else document)
        results.append(hits)
    return {"result": results}


def _content_length(header: str | None, limit: int) -> int:
    """The body size a request declares (raises ``RequestError`` unless it is a whole number within the limit)."""
    if header is None:
        raise RequestError(400, "a Content-Length header is required")
    digits = header.strip()
    if not (digits.isascii() and digits.isdigit()):
        raise RequestError(400, f"Content-Length must be a non-negative integer, got {header[:40]!r}")
    if len(digits) > 18 or int(digits) > limit:
        raise RequestError(413, f"the body (Content-Length {digits[:20]}) is over the limit of {limit} bytes "
                                "(max_body_bytes)")
    return int(digits)


_BUSY = json.dumps({"error": "the server is serving its maximum number of connections (max_connections); retry "
                            "shortly"}).encode()


class BoundedServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with at most ``max_connections`` connections served at once (one thread each; the
    next gets a 503 and is closed), and a reaper that closes a connection whose request is still arriving
    ``request_timeout_s`` after it began."""

    def __init__(self, address, handler, limits: ServerLimits) -> None:
        self.limits = limits
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._deadlines: dict[socket.socket, float] = {}
        self._deadlines_lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__(address, handler)
        threading.Thread(target=self._reap, name="retrieval-server-reaper", daemon=True).start()

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY), _BUSY))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.watch(request, None)
            self._slots.release()

    def watch(self, connection: socket.socket, seconds: float | None) -> None:
        """Close ``connection`` if it is still watched ``seconds`` from now (None: stop watching it)."""
        with self._deadlines_lock:
            if seconds is None:
                self._deadlines.pop(connection, None)
            else:
                self._deadlines[connection] = time.monotonic() + seconds

    def _reap(self) -> None:
        while not self._closed.wait(min(0.25, self.limits.request_timeout_s / 4)):
            now = time.monotonic()
            with self._deadlines_lock:
                late = [connection for connection, deadline in self._deadlines.items() if deadline <= now]
                for connection in late:
                    del self._deadlines[connection]
            for connection in late:  # the handler's blocked read ends: it sees the connection closed
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def handle_error(self, request, client_address) -> None:
        """A dropped connection is not worth a traceback on the server's console."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def server_close(self) -> None:
        self._closed.set()
        super().server_close()


def make_server(retriever: BM25Retriever, host: str = "127.0.0.1", port: int = 8000,
                limits: ServerLimits = ServerLimits(), identity: dict | None = None) -> ThreadingHTTPServer:
    """A server bound to ``(host, port)`` (port 0 = a free one; read it from ``server.server_address``).
    ``identity`` (``retrieval.world_identity``) is what ``GET /health`` reports; default: the corpus digest alone."""
    health = {"status": "ok", **(identity or world_identity(retriever.passages, corpus="unnamed"))}
    lock = threading.Lock()  # the ranking cache is a plain dict: one query is ranked at a time
    retriever.max_cache_bytes = limits.max_cache_bytes

    class Handler(BaseHTTPRequestHandler):
        timeout = limits.read_timeout_s  # every read of the connection (request line, headers, body)

        def handle_one_request(self) -> None:
            """The whole request must arrive within ``request_timeout_s`` (each read within ``read_timeout_s``)."""
            self.server.watch(self.connection, limits.request_timeout_s)
            try:
                super().handle_one_request()
            finally:
                self.server.watch(self.connection, None)

        def _send(self, code: int, payload: dict) -> None:
            body = json.dumps(payload).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if code >= 400:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

        def _drain(self) -> None:
            """Reads what the client still sends (for a while), so closing does not reset the error answer away."""
            try:
                self.connection.shutdown(socket.SHUT_WR)
                deadline, drained = time.monotonic() + _DRAIN_S, 0
                while drained < _DRAIN_BYTES and (left := deadline - time.monotonic()) > 0:
                    self.connection.settimeout(left)
                    chunk = self.connection.recv(1 << 16)
                    if not chunk:
                        break
                    drained += len(chunk)
            except OSError:
                pass

        def _read_body(self, length: int) -> object:
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                raise RequestError(408, f"the body did not arrive within read_timeout_s={limits.read_timeout_s}") \
                    from None
            if len(body) < length:
                raise RequestError(400, f"the body ended after {len(body)} of {length} bytes")
            try:
                return json.loads(body.decode("utf-8"))
            except RecursionError:
                raise RequestError(400, "the body is nested too deeply") from None
            except ValueError as error:  # invalid UTF-8 or JSON
                raise RequestError(400, f"the body is not valid JSON: {error}") from None

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") == "/health":
                self._send(200, health)
            else:
                self._send(404, {"error": f"unknown path {self.path}; use POST /retrieve or GET /health"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path.rstrip("/") != "/retrieve":
                self._send(404, {"error": f"unknown path {self.path}; use POST /retrieve"})
                return
            try:
                length = _content_length(self.headers.get("Content-Length"), limits.max_body_bytes)
            except RequestError as error:  # the body stays unread: drain it so that the client reads the answer
                self._send(error.status, {"error": str(error)})
                self._drain()
                return
            try:
                request = self._read_body(length)
                self.server.watch(self.connection, None)  # arrived: ranking time is not the sender's
                payload = answer(retriever, request, limits, lock)
            except RequestError as error:
                self._send(error.status, {"error": str(error)})
                return
            except Exception as error:  # noqa: BLE001 - a bug or a failing retriever: answer, keep serving
                self._send(500, {"error": f"{type(error).__name__}: {error}"})
                return
            self._send(200, payload)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet by default
            pass

    return BoundedServer((host, port), Handler, limits)


def main(argv: list[str] | None = None) -> None:
    defaults = ServerLimits()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 = any free port; default 8000)")
    parser.add_argument("--config", default=None, help="serve the world of this craft_pl config's data.env (its "
                        "num_entities, seed, rates or corpus_file), e.g. configs/search_qa.yaml")
    parser.add_argument("--corpus", default=None, help="JSONL corpus, one {id, contents='Title\\ntext'} per line")
    parser.add_argument("--num-entities", type=int, default=300, help="built-in corpus: number of entities")
    parser.add_argument("--seed", type=int, default=0, help="built-in corpus: world seed")
    parser.add_argument("--look-alike-rate", type=float, default=0.3, help="built-in corpus: look-alike names")
    parser.add_argument("--landmark-rate", type=float, default=0.3, help="built-in corpus: landmark distractors")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes,
                        help=f"largest request body; larger get a 413 (default {defaults.max_body_bytes})")
    parser.add_argument("--max-queries", type=int, default=defaults.max_queries,
                        help=f"most queries per request; more get a 413 (default {defaults.max_queries})")
    parser.add_argument("--max-topk", type=int, default=defaults.max_topk,
                        help=f"largest topk; larger get a 400 (default {defaults.max_topk})")
    parser.add_argument("--read-timeout-s", type=float, default=defaults.read_timeout_s,
                        help=f"drop a connection silent this long (default {defaults.read_timeout_s})")
    parser.add_argument("--request-timeout-s", type=float, default=defaults.request_timeout_s,
                        help=f"drop a request not fully arrived after this long (default {defaults.request_timeout_s})")
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections,
                        help=f"connections served at once; more get a 503 (default {defaults.max_connections})")
    parser.add_argument("--max-cache-bytes", type=int, default=defaults.max_cache_bytes,
                        help=f"memory of the ranking cache (default {defaults.max_cache_bytes})")
    args = parser.parse_args(argv)
    limits = ServerLimits(args.max_body_bytes, args.max_queries, args.max_topk, args.read_timeout_s,
                          args.request_timeout_s, args.max_connections, args.max_cache_bytes)
    if args.config:
        world_from_config(args, parser)
    if args.corpus:
        passages = load_corpus(args.corpus)
        identity = world_identity(passages, corpus=args.corpus)
    else:
        passages = build_world(args.num_entities, args.seed, args.look_alike_rate, args.landmark_rate).passages
        identity = world_identity(passages, args.num_entities, args.seed)
    server = make_server(BM25Retriever(passages), args.host, args.port, limits, identity)
    host, port = server.server_address[:2]
    what = f"corpus {args.corpus}" if args.corpus else f"the built-in world of {args.num_entities} entities, seed " \
        f"{args.seed}"
    print(f"serving {len(passages)} passages at http://{host}:{port}/retrieve ({what}, corpus digest "
          f"{identity['corpus_digest']})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def world_from_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Take the world from ``args.config``'s ``data.env.init_args`` (the keys it sets; SearchQAEnv's defaults else)."""
    import yaml

    try:
        config = yaml.safe_load(open(args.config, encoding="utf-8"))
        env = config["data"]["env"]
        init_args = env.get("init_args") or {}
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as error:
        parser.error(f"--config {args.config}: no data.env in it ({type(error).__name__}: {error}); give a Search-QA "
                     "config such as configs/search_qa.yaml")
    if not str(env.get("class_path", "")).endswith("SearchQAEnv"):
        parser.error(f"--config {args.config}: data.env is {env.get('class_path')}, not SearchQAEnv; give a Search-QA "
                     "config such as configs/search_qa.yaml")
    from craft_pl.envs.search_qa.env import SearchQAEnv

    defaults = {k: v.default for k, v in inspect.signature(SearchQAEnv.__init__).parameters.items()}
    for key in ("num_entities", "seed", "look_alike_rate", "landmark_rate"):
        setattr(args, key, init_args.get(key, defaults[key]))
    args.corpus = init_args.get("corpus_file", args.corpus)


if __name__ == "__main__":
    main()
