"""``HTTPRetriever``: a client of a Search-R1-style retrieval server (stdlib ``urllib``, no extra dependency).

The protocol, as Search-R1 / verl-agent run it: ``POST /retrieve`` with
``{"queries": [...], "topk": k, "return_scores": true}``; the answer is ``{"result": [[hit, ...], ...]}``, one list
per query, where a hit is ``{"document": {"id": ..., "contents": "Title\\ntext"}, "score": s}`` (or the bare document
when scores were not asked for).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from craft_pl.envs.search_qa.retrieval import Retriever
from craft_pl.envs.search_qa.world import Passage

SERVER_HINT = (
    "start one with `python -m craft_pl.envs.search_qa.server --port 8000` (BM25 over the built-in corpus, or "
    "`--corpus wiki-18.jsonl` for yours) or Search-R1's retrieval_server.py, or point retrieval_url at a running one"
)


class RetrievalServerError(RuntimeError):
    """The retrieval server could not be reached or gave an answer that is not the Search-R1 protocol."""


class HTTPRetriever(Retriever):
    """Asks a retrieval server over HTTP, with a timeout per request and retries with exponential backoff."""

    def __init__(self, url: str = "http://127.0.0.1:8000/retrieve", timeout_s: float = 10.0, retries: int = 3,
                 backoff_s: float = 0.5) -> None:
        """
        Args:
            url: Address of the server's retrieve endpoint.
            timeout_s: Seconds to wait for one answer.
            retries: Further attempts after a failed request (0 = try once).
            backoff_s: Wait before the first retry; it doubles for each further one.
        """
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"HTTPRetriever: url={url!r} is invalid; use an http(s) address such as "
                             "http://127.0.0.1:8000/retrieve")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("HTTPRetriever: timeout_s must be > 0, retries and backoff_s >= 0")
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s

    def _post(self, payload: dict) -> dict:
        body = json.dumps(payload).encode("utf-8")
        last_error: Exception | None = None
        attempts = 0
        for attempt in range(self.retries + 1):
            attempts += 1
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            request = urllib.request.Request(self.url, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read().decode("utf-8"))
            except urllib.error.HTTPError as error:
                last_error = error
                if 400 <= error.code < 500:  # the server is up but refuses the request: retrying cannot help
                    break
            except (urllib.error.URLError, OSError, ValueError) as error:
                last_error = error
        raise RetrievalServerError(
            f"retrieval server at {self.url} failed after {attempts} attempt(s): {last_error!r}; "
            f"{SERVER_HINT}"
        )

    def retrieve(self, queries: list[str], top_k: int) -> list[list[Passage]]:
        if not queries:
            return []
        answer = self._post({"queries": list(queries), "topk": int(top_k), "return_scores": True})
        results = answer.get("result") if isinstance(answer, dict) else None
        if not isinstance(results, list) or len(results) != len(queries):
            raise RetrievalServerError(f"retrieval server at {self.url} answered {str(answer)[:200]!r}, not "
                                       f"{{'result': [one list per query]}} for {len(queries)} queries")
        return [[_passage(hit) for hit in hits[:top_k]] for hits in results]


def _passage(hit: dict) -> Passage:
    document = hit.get("document", hit) if isinstance(hit, dict) else {}
    contents = str(document.get("contents", ""))
    title, _, text = contents.partition("\n")
    return Passage(str(document.get("id", "")), title.strip().strip('"'), text.strip())
