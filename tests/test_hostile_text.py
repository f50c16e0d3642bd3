"""Text at every entry is valid UTF-8 after entry: a lone surrogate in an observation, a prompt, a corpus passage, a
question file or a retrieval answer is replaced (and counted), not passed to the tokenizer; malformed corpus and
question rows are refused naming the file and the row; ``contents: null`` is an error, never the text "None"."""

import json

import pytest
import torch

from craft_pl import text_entry
from craft_pl.envs.base import StepResult
from craft_pl.envs.search_qa.http_retriever import parse_answer
from craft_pl.envs.search_qa.question_files import load_questions
from craft_pl.envs.search_qa.retrieval import load_corpus
from craft_pl.rollout.collector import Collector
from craft_pl.rollout.engine import SamplingParams
from tests.test_collector import ScriptedEngine
from tests.toy_env import PickWordEnv

LONE = "\ud800"


class SurrogateEnv(PickWordEnv):
    """Observations and the task's own text carry a lone surrogate."""

    def start(self, task):
        return super().start(task) + LONE

    def transition(self, action):
        result = super().transition(action)
        return StepResult(result.observation + "\udfff", result.reward, result.done, result.info)

    def prompt(self, task, history, observation, step_index):
        parts = super().prompt(task, history, observation, step_index)
        return type(parts)(parts.preamble + LONE, parts.history, parts.current)


def test_a_lone_surrogate_in_an_observation_or_prompt_does_not_reach_the_tokenizer(tiny_policy):
    """Guards: one ``\\ud800`` in an observation killed the run in the tokenizer."""
    before = sum(text_entry.replaced.values())
    tasks = PickWordEnv().task_panel("train", 1, 0)
    texts = ["<think>a</think><action>nothing</action>"] * 2 + ["<think>a</think><action>brick</action>"] * 2
    trajectories = Collector(SurrogateEnv, history_length=2).run(tasks, 2, tiny_policy, ScriptedEngine(texts),
                                                                 SamplingParams(), torch.Generator())
    assert not any(t.env_error for t in trajectories)
    for trajectory in trajectories:
        for record in trajectory.turns:
            text = record.prompt_parts.render()
            text.encode("utf-8")  # valid UTF-8
            assert text_entry.REPLACEMENT in text
    assert text_entry.replaced["observation"] >= 2 and sum(text_entry.replaced.values()) > before


def test_clean_leaves_valid_text_alone_and_counts_replacements():
    text = "caf\u00e9 \u2603"
    assert text_entry.clean(text, "t") is text
    before = text_entry.replaced["t"]
    assert text_entry.clean(f"a{LONE}b\udc80", "t") == "a\ufffdb\ufffd"
    assert text_entry.replaced["t"] == before + 2
    assert text_entry.decode(b"ok \xff\xfe", "t") == "ok \ufffd\ufffd"


def _write_lines(path, lines):
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


def test_corpus_text_is_valid_utf8_after_loading(tmp_path):
    """Guards: the corpus loader passed surrogates (JSON escapes) through and died on bytes that are not UTF-8."""
    corpus = _write_lines(tmp_path / "c.jsonl", [json.dumps({"id": "1", "contents": f"Ti{LONE}tle\nte\\xt"}),
                                                 b'{"id": "2", "contents": "Caf\xff\\nbody"}'])
    passages = load_corpus(corpus)
    assert [p.title for p in passages] == ["Ti\ufffdtle", "Caf\ufffd"]
    for passage in passages:
        passage.contents.encode("utf-8")


@pytest.mark.parametrize("line, words", [
    ('{"id": 1, "contents": null}', ["line 2", "contents NoneType", "string 'contents'"]),
    ('{"id": 1}', ["line 2", "no 'contents'"]),
    ('{"id": 1, "contents": "T\\nx"', ["line 2", "is not JSON"]),
    ('["T\\nx"]', ["line 2", "has list"]),
    ('{"id": [1], "contents": "T\\nx"}', ["line 2", "'id' is a list"]),
])
def test_a_malformed_corpus_line_is_refused_naming_the_file_and_the_line(tmp_path, line, words):
    """Guards: malformed rows gave tracebacks naming no file or row; ``contents: null`` became the text "None"."""
    corpus = _write_lines(tmp_path / "c.jsonl", ['{"id": 0, "contents": "Good\\ntext"}', line])
    with pytest.raises(ValueError) as error:
        load_corpus(corpus)
    message = str(error.value)
    assert f"corpus {corpus}" in message and all(word in message for word in words), message


def test_question_file_text_is_valid_utf8_after_loading(tmp_path):
    path = _write_lines(tmp_path / "q.jsonl", [
        json.dumps({"question": f"who{LONE}", "golden_answers": [f"a{LONE}"], "data_source": "nq"}),
        b'{"question": "wh\xffat", "golden_answers": "b"}'])
    items = load_questions(path)
    assert [item.question for item in items] == ["who\ufffd?", "wh\ufffdat?"]
    assert items[0].golden_answers == ("a\ufffd",)


@pytest.mark.parametrize("line, words", [
    ('{"question": "q", "golden_answers": [null]}', ["line 2", "golden_answers"]),
    ('{"question": "q", "golden_answers": [{"a": 1}]}', ["line 2", "golden_answers"]),
    ('{"question": null, "golden_answers": ["a"]}', ["line 2", "non-empty 'question'"]),
    ('"just a string"', ["line 2", "is a str"]),
    ('{"question": "q", "golden_answers": ["a"]', ["line 2", "is not JSON"]),
    ('{"question": "q", "reward_model": "oops"}', ["line 2", "golden_answers"]),
])
def test_a_malformed_question_row_is_refused_naming_the_file_and_the_row(tmp_path, line, words):
    """Guards: a null answer became the answer "None"; other malformed rows gave tracebacks naming no row."""
    path = _write_lines(tmp_path / "q.jsonl", ['{"question": "ok?", "golden_answers": ["x"]}', line])
    with pytest.raises(ValueError) as error:
        load_questions(path)
    message = str(error.value)
    assert f"question file {path}" in message and all(word in message for word in words), message


def test_retrieval_answers_are_valid_utf8_after_parsing():
    """Guards: the retrieval client passed a surrogate in a passage through to the observation."""
    answer = {"result": [[{"document": {"id": f"d{LONE}", "contents": f"T{LONE}\nbody{LONE}"}, "score": 1.0}]]}
    (passages,) = parse_answer(answer, 1, 3)
    assert passages[0].title == "T\ufffd" and passages[0].text == "body\ufffd" and passages[0].doc_id == "d\ufffd"
