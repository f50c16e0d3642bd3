"""``SearchQAEnv``: Search-R1's search-and-answer protocol behind the ``AgentEnv`` contract."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from craft_pl.envs.base import AgentEnv, Expert, PromptParts, StepResult, Task, Turn
from craft_pl.envs.search_qa import text
from craft_pl.envs.search_qa.expert import SearchQAExpert
from craft_pl.envs.search_qa.http_retriever import HTTPRetriever
from craft_pl.envs.search_qa.privileged import PRIVILEGED_MODES, hint_text, skill_text, wrong_hint_text
from craft_pl.envs.search_qa.question_files import load_questions
from craft_pl.envs.search_qa.questions import DATA_SOURCES, SPLITS, QAItem, question_panel, split_of
from craft_pl.envs.search_qa.retrieval import (BM25Retriever, Retriever, format_information, load_corpus,
                                             world_identity)
from craft_pl.envs.search_qa.world import World, build_world

log = logging.getLogger(__name__)

WIN_REWARD = 10.0
"""Step reward of a correct answer (10 x exact match, as the collector treats WebShop's 10 x success)."""

_WORLDS: dict[tuple, tuple[World, BM25Retriever]] = {}
_RETRIEVERS: dict[tuple, Retriever] = {}
_QUESTIONS: dict[tuple, dict[str, list[QAItem]]] = {}


def clear_caches() -> None:
    """Forget the shared worlds, retrievers and question files (tests use it to rebuild from scratch)."""
    _WORLDS.clear()
    _RETRIEVERS.clear()
    _QUESTIONS.clear()


def shared_world(num_entities: int, seed: int, look_alike_rate: float, landmark_rate: float
                 ) -> tuple[World, BM25Retriever]:
    """The world and a BM25 index of its passages, built once per argument tuple and shared by all environments."""
    key = (num_entities, seed, float(look_alike_rate), float(landmark_rate))
    if key not in _WORLDS:
        world = build_world(*key)
        _WORLDS[key] = (world, BM25Retriever(world.passages))
    return _WORLDS[key]


class SearchQAEnv(AgentEnv):
    """Question answering with a search engine: ``<search>q</search>`` returns the top passages in
    ``<information>``, ``<answer>a</answer>`` ends the episode with exact-match reward (Search-R1's protocol).

    Questions come from a seeded synthetic world of fictional entities (four kinds, one per ``data_source``) or,
    with ``question_files``, from real NQ / HotpotQA files; passages come from BM25 over the world's corpus, BM25
    over ``corpus_file``, or a Search-R1 retrieval server at ``retrieval_url``.
    """

    eval_temperature: float = 0.0
    """Search-R1 and SDAR evaluate search agents greedily."""
    stop_strings = ("</search>", "</answer>")
    prompt_styles = text.PROMPT_STYLES
    privileged_modes = PRIVILEGED_MODES

    def __init__(
        self,
        num_entities: int = 300,
        seed: int = 0,
        data_sources: list[str] | None = None,
        bridge_hops: int = 2,
        look_alike_rate: float = 0.3,
        landmark_rate: float = 0.3,
        top_k: int = 3,
        max_turns: int = 4,
        invalid_action_penalty: float = 0.01,
        prompt_style: str = "compact",
        privileged: str = "skill",
        retrieval_url: str | None = None,
        retrieval_timeout_s: float = 10.0,
        retrieval_retries: int = 3,
        retrieval_total_timeout_s: float = 30.0,
        corpus_file: str | None = None,
        question_files: dict[str, str] | None = None,
        hint_reliability: float = 1.0,
        hint_seed: int = 0,
    ) -> None:
        """
        Args:
            num_entities: Entities of the synthetic world (about one passage each: the corpus size).
            seed: World seed (task panels take their own seed in ``task_panel``).
            data_sources: Question kinds to draw, uniformly (default all four: single_hop, bridge, comparison,
                attribute).
            bridge_hops: Passages a bridge question needs (2 or 3; 3 = two links, e.g. the birthplace's country).
            look_alike_rate: Share of names that reuse a word of an earlier name (distractors for search).
            landmark_rate: Distractor passages per person: landmarks named after them (``Orin Valdek Bridge``).
            top_k: Passages returned per search (Search-R1: 3).
            max_turns: Episode horizon; the episode ends unanswered after this many steps (Search-R1: 4).
            invalid_action_penalty: Subtracted by the trainer per invalid turn (CRAFT spec: 0.01).
            prompt_style: ``compact`` (few words, for tiny models) or ``search_r1`` (SDAR / verl-agent's template).
            privileged: Teacher context: ``skill`` (general + data-source skill text) or ``hint`` (the searches
                and the answer of the task).
            retrieval_url: A Search-R1 retrieval server (``http://host:port/retrieve``) instead of in-process BM25.
            retrieval_timeout_s: Seconds to wait for the server per request.
            retrieval_retries: Further attempts after a failed request (exponential backoff from 0.5 s).
            retrieval_total_timeout_s: Most seconds one search may take at the server, all attempts and waits
                included (a server that accepts and never answers costs at most this per search step).
            corpus_file: In-process BM25 over this JSONL corpus (``{"id", "contents": "Title\\ntext"}`` lines,
                wiki-18's format) instead of the synthetic world's passages.
            question_files: Real questions per split, e.g. ``{train: nq_train.jsonl, val: nq_dev.jsonl}`` (JSONL or
                Parquet with ``question`` and ``golden_answers``); a split without a file takes the questions of
                the given files that hash to it. Needs ``retrieval_url`` or ``corpus_file``.
            hint_reliability: Share of tasks whose ``hint`` is correct, in [0, 1]; the others get a plausible wrong
                one (a look-alike entity and its fact, or the wrong side of a comparison). Does not apply to ``skill``.
            hint_seed: Seed of which tasks get a wrong hint (a hash of task id and this seed only: every method and
                ``seed_everything`` value sees the same ones).
        """
        super().__init__(max_turns, invalid_action_penalty, prompt_style, privileged)
        self.set_hint_reliability(hint_reliability, hint_seed)
        self._check_args(locals())
        self.num_entities = num_entities
        self.seed = seed
        self.data_sources = tuple(data_sources or DATA_SOURCES)
        self.bridge_hops = bridge_hops
        self.top_k = top_k
        self.question_files = dict(question_files or {})
        self.world, bm25 = shared_world(num_entities, seed, look_alike_rate, landmark_rate)
        self.retriever = self._shared_retriever(bm25, retrieval_url, retrieval_timeout_s, retrieval_retries,
                                                corpus_file, retrieval_total_timeout_s)
        if isinstance(self.retriever, HTTPRetriever) and not self.question_files:  # the server must serve this world
            self.retriever.check_world(world_identity(self.world.passages, num_entities, seed))
        self._item: QAItem | None = None

    @staticmethod
    def _check_args(args: dict[str, Any]) -> None:
        def need(ok: bool, name: str, fix: str) -> None:
            if not ok:
                raise ValueError(f"SearchQAEnv: {name}={args[name]!r} is invalid; {fix}")

        need(isinstance(args["num_entities"], int) and args["num_entities"] >= 20, "num_entities", "use an int >= 20")
        need(isinstance(args["seed"], int), "seed", "use an int")
        sources = args["data_sources"] or DATA_SOURCES
        need(bool(sources) and all(s in DATA_SOURCES for s in sources), "data_sources",
             f"use a non-empty list drawn from {list(DATA_SOURCES)}")
        need(args["bridge_hops"] in (2, 3), "bridge_hops", "use 2 or 3")
        need(0.0 <= args["look_alike_rate"] <= 1.0, "look_alike_rate", "use a probability in [0, 1]")
        need(0.0 <= args["landmark_rate"] <= 1.0, "landmark_rate", "use a probability in [0, 1]")
        need(isinstance(args["top_k"], int) and 1 <= args["top_k"] <= 20, "top_k", "use an int in [1, 20]")
        total = args["retrieval_total_timeout_s"]
        need(isinstance(total, (int, float)) and not isinstance(total, bool) and total > 0,
             "retrieval_total_timeout_s", "use seconds > 0")
        need(args["retrieval_url"] is None or args["corpus_file"] is None, "corpus_file",
             "give either retrieval_url or corpus_file, not both")
        need(args["corpus_file"] is None or Path(args["corpus_file"]).is_file(), "corpus_file",
             "no such file: give the path of a JSONL corpus ({\"id\", \"contents\"} lines)")
        files = args["question_files"] or {}
        need(all(split in SPLITS for split in files), "question_files", f"use splits from {list(SPLITS)} as keys")
        need(not files or args["retrieval_url"] is not None or args["corpus_file"] is not None, "question_files",
             "real questions need their corpus: set retrieval_url (a Search-R1 server) or corpus_file")
        need(not (files and args["privileged"] == "hint"), "privileged",
             "questions from files carry no solving searches; use privileged: skill")

    @staticmethod
    def _shared_retriever(bm25: BM25Retriever, url: str | None, timeout_s: float, retries: int,
                          corpus_file: str | None, total_timeout_s: float = 30.0) -> Retriever:
        if url is None and corpus_file is None:
            return bm25
        key = (url, float(timeout_s), retries, corpus_file, float(total_timeout_s))
        if key not in _RETRIEVERS:
            if url is not None:
                retriever = HTTPRetriever(url, timeout_s, retries, total_timeout_s=total_timeout_s)
                retriever.retrieve(["connection check"], 1)  # fail now, with the address and the fix
            else:
                retriever = BM25Retriever(load_corpus(corpus_file))
            _RETRIEVERS[key] = retriever
        return _RETRIEVERS[key]

    # ------------------------------------------------------------------ tasks
    def task_panel(self, split: str, size: int, seed: int) -> list[Task]:
        if split not in SPLITS:
            raise ValueError(f"SearchQAEnv.task_panel: split={split!r} is invalid; use one of {list(SPLITS)}")
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"SearchQAEnv.task_panel: size={size!r} is invalid; use an int >= 0")
        if self.question_files:
            items = self._file_panel(split, size, seed)
        else:
            items = question_panel(self.world, self.seed, split, size, seed, self.data_sources, self.bridge_hops)
        return [Task(f"search_qa/{split}/{seed}/{i:05d}", item.data_source, item.question, item)
                for i, item in enumerate(items)]

    def _file_pools(self) -> dict[str, list[QAItem]]:
        """Questions per split from ``question_files`` (loaded once per file set and shared)."""
        key = tuple(sorted(self.question_files.items()))
        if key not in _QUESTIONS:
            loaded = {name: load_questions(path) for name, path in self.question_files.items()}
            _QUESTIONS[key] = {name: loaded.get(name) or [
                item for items in loaded.values() for item in items if split_of(item.question, 0) == name]
                for name in SPLITS}
        return _QUESTIONS[key]

    def _file_panel(self, split: str, size: int, seed: int) -> list[QAItem]:
        pool = self._file_pools()[split]
        if not pool:
            raise ValueError(f"SearchQAEnv: no {split} questions in question_files; give a {split} file")
        order = list(range(len(pool)))
        random.Random(f"search_qa/files/{split}/{seed}").shuffle(order)
        return [pool[order[i % len(order)]] for i in range(size)]

    @property
    def task_types(self) -> list[str]:
        if self.question_files:
            return sorted({item.data_source for items in self._file_pools().values() for item in items})
        return list(self.data_sources)

    # ------------------------------------------------------------------ episode
    def start(self, task: Task) -> str:
        if not isinstance(task.payload, QAItem):
            raise ValueError(f"SearchQAEnv.reset: task {task.task_id!r} has no Search-QA question payload")
        self._item = task.payload
        return ""

    @property
    def admissible_actions(self) -> list[str]:
        return [] if self._item is None or self.done else list(text.ADMISSIBLE)

    def transition(self, action: str | None) -> StepResult:
        parsed, valid = text.parse_action(action) if action is not None else (None, False)
        info: dict[str, Any] = {"valid_action": valid, "won": False, "score": 0.0}
        reward, observation, ended = 0.0, text.INVALID_OBSERVATION, False
        if valid:
            verb, argument = text.split_action(parsed)
            if verb == "answer":
                won = text.exact_match(argument, self._item.golden_answers)
                info.update(won=won, score=float(won), answer=argument)
                reward, observation, ended = WIN_REWARD * won, "", True
            else:
                passages = self.retriever.retrieve([argument], self.top_k)[0]
                observation = format_information(passages)
                info["retrieved_ids"] = [p.doc_id for p in passages]
        return StepResult(observation, reward, ended, info)

    # ------------------------------------------------------------------ text
    def parse_action(self, text_: str) -> tuple[str | None, bool]:
        return text.parse_action(text_)

    def format_response(self, action: str) -> str:
        return text.format_response(action)

    def prompt(self, task: Task, history: list[Turn], observation: str, step_index: int) -> PromptParts:
        if self.prompt_style == "search_r1":
            return text.search_r1_prompt(task.instruction, list(history), observation, step_index)
        return text.compact_prompt(task.instruction, list(history), observation)

    def make_expert(self) -> Expert:
        return SearchQAExpert()

    def skill_context(self, task: Task) -> str:
        return skill_text(task.task_type)

    def hint_context(self, task: Task) -> str:
        return hint_text(self._item_of(task))

    def wrong_hint_context(self, task: Task) -> str:
        return wrong_hint_text(self._item_of(task), self.world)

    @staticmethod
    def _item_of(task: Task) -> QAItem:
        if not isinstance(task.payload, QAItem):
            raise ValueError(f"SearchQAEnv.privileged_context: task {task.task_id!r} has no question payload")
        return task.payload

    def close(self) -> None:
        self._item = None
