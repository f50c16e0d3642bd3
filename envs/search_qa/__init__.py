"""Search-QA with Search-R1's protocol: a seeded world of fictional entities, BM25 or a retrieval server, EM reward."""

from craft_pl.envs.search_qa.env import SearchQAEnv
from craft_pl.envs.search_qa.expert import SearchQAExpert
from craft_pl.envs.search_qa.http_retriever import HTTPRetriever, RetrievalServerError
from craft_pl.envs.search_qa.retrieval import BM25Retriever, Retriever

__all__ = ["BM25Retriever", "HTTPRetriever", "RetrievalServerError", "Retriever", "SearchQAEnv", "SearchQAExpert"]
