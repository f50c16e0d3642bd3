"""A Search-R1-style retrieval server over our BM25 retriever, on the standard library's ``http.server``.

    python -m craft_pl.envs.search_qa.server --port 8000                       # the built-in synthetic corpus
    python -m craft_pl.envs.search_qa.server --port 8000 --corpus wiki.jsonl    # your corpus (wiki-18 format)

``POST /retrieve`` takes ``{"queries": [...], "topk": k, "return_scores": bool}`` and answers
``{"result": [[{"document": {"id", "contents"}, "score": s}, ...], ...]}`` (bare documents without scores), as
Search-R1's server does; ``GET /health`` answers ``{"status": "ok", "passages": n}``.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from craft_pl.envs.search_qa.retrieval import BM25Retriever, load_corpus
from craft_pl.envs.search_qa.world import build_world

MAX_TOPK = 100


def answer(retriever: BM25Retriever, request: dict) -> dict:
    """The protocol's answer to one decoded request (raises ``ValueError`` on a malformed one)."""
    queries, top_k = request.get("queries"), request.get("topk", 3)
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise ValueError("'queries' must be a list of strings")
    if not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOPK:
        raise ValueError(f"'topk' must be an int in [1, {MAX_TOPK}]")
    with_scores = bool(request.get("return_scores", False))
    results = []
    for query in queries:
        hits = []
        for index, score in retriever.ranking(query, top_k):
            passage = retriever.passages[index]
            document = {"id": passage.doc_id, "contents": passage.contents}
            hits.append({"document": document, "score": score} if with_scores else document)
        results.append(hits)
    return {"result": results}


def make_server(retriever: BM25Retriever, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server bound to ``(host, port)`` (port 0 = a free one; read it from ``server.server_address``)."""
    lock = threading.Lock()  # the ranking cache is a plain dict

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, payload: dict) -> None:
            body = json.dumps(payload).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.rstrip("/") == "/health":
                self._send(200, {"status": "ok", "passages": len(retriever.passages)})
            else:
                self._send(404, {"error": f"unknown path {self.path}; use POST /retrieve or GET /health"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path.rstrip("/") != "/retrieve":
                self._send(404, {"error": f"unknown path {self.path}; use POST /retrieve"})
                return
            try:
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length).decode("utf-8"))
                with lock:
                    payload = answer(retriever, request)
            except (ValueError, AttributeError) as error:
                self._send(400, {"error": str(error)})
                return
            self._send(200, payload)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet by default
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (0 = any free port; default 8000)")
    parser.add_argument("--corpus", default=None, help="JSONL corpus, one {id, contents='Title\\ntext'} per line")
    parser.add_argument("--num-entities", type=int, default=300, help="built-in corpus: number of entities")
    parser.add_argument("--seed", type=int, default=0, help="built-in corpus: world seed")
    parser.add_argument("--look-alike-rate", type=float, default=0.3, help="built-in corpus: look-alike names")
    parser.add_argument("--landmark-rate", type=float, default=0.3, help="built-in corpus: landmark distractors")
    args = parser.parse_args(argv)
    if args.corpus:
        passages = load_corpus(args.corpus)
    else:
        passages = build_world(args.num_entities, args.seed, args.look_alike_rate, args.landmark_rate).passages
    server = make_server(BM25Retriever(passages), args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving {len(passages)} passages at http://{host}:{port}/retrieve", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
