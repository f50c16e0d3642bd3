"""``HTTPRetriever``: a client of a Search-R1-style retrieval server (stdlib ``http.client``, no extra dependency).

The protocol, as Search-R1 / verl-agent run it: ``POST /retrieve`` with
``{"queries": [...], "topk": k, "return_scores": true}``; the answer is ``{"result": [[hit, ...], ...]}``, one list
per query, where a hit is ``{"document": {"id": ..., "contents": "Title\\ntext"}, "score": s}`` (or the bare document
when scores were not asked for). Answers of any other shape raise ``RetrievalServerError`` naming what was wrong.

Each search takes at most ``total_timeout_s``, whatever the server does: every attempt gets what is left of it, and
a watchdog closes the connection when it runs out (a server that accepts and never answers, or answers a byte at a
time, cannot stall a rollout for ``timeout_s x retries``).
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse

from craft_pl.envs.search_qa.retrieval import Retriever, describe_world
from craft_pl.envs.search_qa.world import Passage
from craft_pl.text_entry import clean, decode

log = logging.getLogger(__name__)

SERVER_HINT = (
    "start one with `python -m craft_pl.envs.search_qa.server --port 8000 --config <your config>` (BM25 over the "
    "world the config uses, or `--corpus wiki-18.jsonl` for yours) or Search-R1's retrieval_server.py, or point retrieval_url at a running one"
)


MAX_ANSWER_BYTES = 64 * 2**20
"""Longest retrieval answer read (64 MiB: about 100,000 wiki-18 passages)."""
MAX_PASSAGE_CHARS = 16_384
"""Longest passage kept (wiki-18's are about 600 characters); longer ones are cut."""


class RetrievalServerError(RuntimeError):
    """The retrieval server could not be reached or gave an answer that is not the Search-R1 protocol."""


class WorldMismatch(ValueError):
    """The retrieval server serves another corpus than the world the environment is configured for."""


_agreed: set[tuple[str, str]] = set()
"""(url, corpus digest) pairs already checked in this process (environments share one retriever per address)."""


class AnswerTooLarge(Exception):
    """The server's answer is longer than ``max_answer_bytes``."""


class HTTPRetriever(Retriever):
    """Asks a retrieval server over HTTP, with a timeout per request, retries with exponential backoff, and a bound
    on the total time of one search."""

    def __init__(self, url: str = "http://127.0.0.1:8000/retrieve", timeout_s: float = 10.0, retries: int = 3,
                 backoff_s: float = 0.5, total_timeout_s: float = 30.0,
                 max_answer_bytes: int = MAX_ANSWER_BYTES, max_passage_chars: int = MAX_PASSAGE_CHARS) -> None:
        """
        Args:
            url: Address of the server's retrieve endpoint.
            timeout_s: Seconds to wait for one answer.
            retries: Further attempts after a failed request (0 = try once).
            backoff_s: Wait before the first retry; it doubles for each further one.
            total_timeout_s: Most seconds one search may take, all attempts and waits included.
            max_answer_bytes: Longest answer read; a longer one is refused after reading this much (an endless answer
                costs this much memory, not all of it).
            max_passage_chars: Longest passage kept; a longer passage's text is cut to this many characters.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"HTTPRetriever: url={url!r} is invalid; use an http(s) address such as "
                             "http://127.0.0.1:8000/retrieve")
        if timeout_s <= 0 or total_timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("HTTPRetriever: timeout_s and total_timeout_s must be > 0, retries and backoff_s >= 0")
        if max_answer_bytes < 1024 or max_passage_chars < 16:
            raise ValueError("HTTPRetriever: max_answer_bytes must be >= 1024 and max_passage_chars >= 16")
        self.max_answer_bytes = int(max_answer_bytes)
        self.max_passage_chars = int(max_passage_chars)
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.total_timeout_s = total_timeout_s
        self._connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port = parts.hostname, parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def _exchange(self, body: bytes, deadline: float) -> tuple[int, bytes]:
        """One POST: ``(status, body)``; raises ``TimeoutError`` when the deadline passes, ``OSError`` otherwise."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no time left within total_timeout_s={self.total_timeout_s}")
        connection = self._connection_type(self._host, self._port, timeout=min(self.timeout_s, left))
        expired = threading.Event()

        def abort() -> None:  # wakes a blocked read: the server keeps the connection open but sends nothing
            expired.set()
            try:
                connection.sock.shutdown(socket.SHUT_RDWR)
            except (AttributeError, OSError):
                pass

        watchdog = threading.Timer(left, abort)
        watchdog.daemon = True
        try:
            connection.connect()
            watchdog.start()
            connection.request("POST", self._path, body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            declared = response.getheader("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_answer_bytes:
                raise AnswerTooLarge(f"the answer declares {int(declared)} bytes, more than max_answer_bytes="
                                     f"{self.max_answer_bytes}")
            answer = response.read(self.max_answer_bytes + 1)  # an endless answer stops here
            if len(answer) > self.max_answer_bytes:
                raise AnswerTooLarge(f"the answer is longer than max_answer_bytes={self.max_answer_bytes}")
            return response.status, answer
        except AnswerTooLarge:
            raise
        except (OSError, http.client.HTTPException) as error:
            if expired.is_set() or time.monotonic() >= deadline:
                raise TimeoutError(f"no complete answer within total_timeout_s={self.total_timeout_s}") from error
            raise OSError(f"{type(error).__name__}: {error}") from error
        finally:
            watchdog.cancel()
            connection.close()

    def _post(self, payload: dict) -> object:
        body = json.dumps(payload).encode("utf-8")
        started = time.monotonic()
        deadline = started + self.total_timeout_s
        last_error = ""
        attempts = 0
        for attempt in range(self.retries + 1):
            if attempt:
                pause = self.backoff_s * 2 ** (attempt - 1)
                if time.monotonic() + pause >= deadline:
                    last_error += f"; no time left for a retry within total_timeout_s={self.total_timeout_s}"
                    break
                time.sleep(pause)
            attempts += 1
            try:
                status, answer = self._exchange(body, deadline)
            except (TimeoutError, AnswerTooLarge) as error:  # asking again would cost the same
                last_error = str(error)
                break
            except OSError as error:
                last_error = str(error)
                continue
            if status == 200:
                try:
                    return json.loads(decode(answer, "retrieval answer", self.url))
                except ValueError as error:
                    last_error = f"the answer is not JSON ({error}): {answer[:200]!r}"
                    continue
            last_error = f"HTTP {status}: {answer[:300].decode('utf-8', 'replace')}"
            if 400 <= status < 500:  # the server is up but refuses the request: retrying cannot help
                break
        raise RetrievalServerError(
            f"retrieval server at {self.url} failed after {attempts} attempt(s) in "
            f"{time.monotonic() - started:.1f}s: {last_error}; {SERVER_HINT}"
        )

    def check_world(self, expected: dict) -> None:
        """Refuse (``WorldMismatch``, one line naming both) a server whose ``GET /health`` reports another corpus
        digest than ``expected`` (``retrieval.world_identity`` of the configured world). A server that reports no
        digest (Search-R1's own) or cannot be reached is not judged here: its first search says what is wrong."""
        if (self.url, expected["corpus_digest"]) in _agreed:
            return
        path = self._path.split("?")[0]
        health = (path[: -len("/retrieve")] if path.rstrip("/").endswith("/retrieve") else path.rstrip("/")) + "/health"
        connection = self._connection_type(self._host, self._port, timeout=self.timeout_s)
        try:
            connection.request("GET", health)
            response = connection.getresponse()
            served = json.loads(response.read(1 << 16)) if response.status == 200 else {}
        except (OSError, http.client.HTTPException, ValueError) as error:
            log.info("retrieval server at %s: no world to compare (%s)", self.url, error)
            return
        finally:
            connection.close()
        digest = served.get("corpus_digest") if isinstance(served, dict) else None
        if digest is None:
            log.info("retrieval server at %s reports no corpus digest; the world it serves is not checked", self.url)
            return
        if digest != expected["corpus_digest"]:
            fix = (f"`python -m craft_pl.envs.search_qa.server --num-entities {expected['num_entities']} --seed "
                   f"{expected['seed']}` (or `--config <your config>`)" if "num_entities" in expected else
                   "`python -m craft_pl.envs.search_qa.server --config <your config>`")
            raise WorldMismatch(
                f"the retrieval server at {self.url} serves another world ({describe_world(served)}) than data.env "
                f"configures ({describe_world(expected)}); a client and a server that disagree must not train: "
                f"serve the configured world with {fix}, or configure the server's")
        _agreed.add((self.url, digest))

    def retrieve(self, queries: list[str], top_k: int) -> list[list[Passage]]:
        if not queries:
            return []
        answer = self._post({"queries": list(queries), "topk": int(top_k), "return_scores": True})
        try:
            return parse_answer(answer, len(queries), top_k, self.max_passage_chars)
        except ValueError as error:
            raise RetrievalServerError(f"retrieval server at {self.url} broke the Search-R1 protocol: {error}; "
                                       "expected {'result': [[{'document': {'id', 'contents'}, 'score'}, ...], "
                                       "...]} with one list per query") from None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_answer(answer: object, num_queries: int, top_k: int,
                 max_passage_chars: int = MAX_PASSAGE_CHARS) -> list[list[Passage]]:
    """The passages of a ``/retrieve`` answer, at most ``top_k`` per query, each at most ``max_passage_chars`` long
    and valid UTF-8 (raises ``ValueError`` naming the first thing that does not follow the protocol)."""
    if not isinstance(answer, dict) or "result" not in answer:
        raise ValueError(f"the answer is {_show(answer)}, expected a dict with a 'result' list")
    results = answer["result"]
    if not isinstance(results, list):
        raise ValueError(f"result is {_show(results)}, expected a list with one list of documents per query")
    if len(results) != num_queries:
        raise ValueError(f"result has {len(results)} lists for {num_queries} queries")
    passages = []
    for i, hits in enumerate(results):
        if not isinstance(hits, list):
            raise ValueError(f"result[{i}] is {_show(hits)}, expected a list of documents")
        passages.append([_passage(hit, f"result[{i}][{j}]", max_passage_chars) for j, hit in enumerate(hits[:top_k])])
    return passages


def _passage(hit: object, where: str, max_chars: int = 0) -> Passage:
    """A hit is ``{"document": document, "score": s}`` or the bare document ``{"id": ..., "contents": str}``."""
    if not isinstance(hit, dict):
        raise ValueError(f"{where} is {_show(hit)}, expected a document (a dict with a string 'contents')")
    document = hit
    if "document" in hit:
        document, where = hit["document"], f"{where}['document']"
        if not isinstance(document, dict):
            raise ValueError(f"{where} is {_show(document)}, expected a dict with a string 'contents'")
    contents = document.get("contents")
    if not isinstance(contents, str):
        raise ValueError(f"{where}['contents'] is {_show(contents)}, expected a string 'Title\\ntext'")
    doc_id = document.get("id", "")
    if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
        raise ValueError(f"{where}['id'] is {_show(doc_id)}, expected a string or an integer")
    if max_chars and len(contents) > max_chars:
        contents = contents[:max_chars]
        log.warning("retrieval answer: %s is longer than max_passage_chars=%d and was cut", where, max_chars)
    title, _, text = clean(contents, "retrieval answer", where).partition("\n")
    return Passage(clean(str(doc_id), "retrieval answer", where), title.strip().strip('"'), text.strip())
