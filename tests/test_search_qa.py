"""Search-QA: world, questions, parser, prompts, exact match, reward, expert, retrieval quality, privileged text."""

import json

import pytest

from craft_pl.envs.base import Turn
from craft_pl.envs.search_qa import SearchQAEnv
from craft_pl.envs.search_qa.env import WIN_REWARD
from craft_pl.envs.search_qa.expert import read_facts
from craft_pl.envs.search_qa.questions import DATA_SOURCES, parse_question, split_of
from craft_pl.envs.search_qa.retrieval import format_information, read_information
from craft_pl.envs.search_qa.text import INVALID_OBSERVATION, exact_match, normalize_answer, parse_action
from craft_pl.envs.search_qa.world import build_world


@pytest.fixture(scope="module")
def env():
    return SearchQAEnv(num_entities=300)


def _play(env, task, expert=None):
    expert = expert or env.make_expert()
    observation = env.reset(task)
    expert.reset(task.instruction)
    actions = []
    for _ in range(env.max_turns):
        actions.append(expert.act(observation, env.admissible_actions))
        result = env.step(actions[-1])
        observation = result.observation
        if result.done:
            return result, actions
    return result, actions


# ---------------------------------------------------------------- world and questions
def test_world_is_a_function_of_its_seed_with_look_alikes_and_landmarks():
    first, again, other = build_world(200, 3, 0.5, 0.5), build_world(200, 3, 0.5, 0.5), build_world(200, 4, 0.5, 0.5)
    assert [p.contents for p in first.passages] == [p.contents for p in again.passages]
    assert [p.contents for p in first.passages] != [p.contents for p in other.passages]
    people = first.by_kind["person"]
    surnames = [name.split()[-1] for name in people]
    firsts = [name.split()[0] for name in people]
    assert len(set(surnames)) < len(surnames) or len(set(firsts)) < len(firsts)  # look-alike names share a word
    assert any("named after" in p.text for p in first.passages)  # landmark distractors
    assert len(first.passages) == len({p.doc_id for p in first.passages})


def test_every_fact_reads_back_from_its_passage(env):
    for name, entity in env.world.entities.items():
        passage = env.world.passages[int(env.world.passage_of[name][1:])]
        facts = read_facts(passage.title, passage.text)
        assert facts is not None and {k: facts[k] for k in entity.facts} == entity.facts


def test_panels_are_seeded_split_disjoint_and_cover_the_four_kinds(env):
    train = env.task_panel("train", 200, 0)
    assert [t.instruction for t in train] == [t.instruction for t in env.task_panel("train", 200, 0)]
    assert [t.instruction for t in train] != [t.instruction for t in env.task_panel("train", 200, 1)]
    val = env.task_panel("val", 100, 0)
    assert not {t.instruction for t in train} & {t.instruction for t in val}
    assert all(split_of(t.instruction, env.seed) == "val" for t in val)
    assert {t.task_type for t in train} == set(DATA_SOURCES) == set(env.task_types)
    assert all(t.payload.data_source == t.task_type and t.payload.golden_answers for t in train)


def test_question_kinds_and_difficulty_settings():
    three_hops = SearchQAEnv(num_entities=200, bridge_hops=3, data_sources=["bridge"])
    tasks = three_hops.task_panel("train", 20, 0)
    assert {t.task_type for t in tasks} == {"bridge"}
    assert all(len(t.payload.gold_doc_ids) == 3 and len(parse_question(t.instruction).links) == 2 for t in tasks)
    comparison = SearchQAEnv(num_entities=200, data_sources=["comparison"]).task_panel("val", 10, 0)
    assert all(parse_question(t.instruction).other for t in comparison)
    for name, value in [("bridge_hops", 4), ("data_sources", ["trivia"]), ("num_entities", 5), ("top_k", 0),
                        ("prompt_style", "chat"), ("privileged", "answer"), ("look_alike_rate", 2.0)]:
        with pytest.raises(ValueError, match=name):
            SearchQAEnv(**{name: value})


# ---------------------------------------------------------------- parser
@pytest.mark.parametrize("text, expected", [
    ("<think>ok</think><search>Velmora Dynamics</search>", "<search>Velmora Dynamics</search>"),
    ("<search>  two   words </search>", "<search>two words</search>"),
    ("<think>so</think> <answer>Brellin</answer><|im_end|>", "<answer>Brellin</answer>"),
    ("<search>a</search> trailing <answer>b</answer>", "<search>a</search>"),  # cut after the first closing tag
    ("<answer>x</answer><search>y</search>", "<answer>x</answer>"),
])
def test_parser_accepts_one_action(text, expected):
    assert parse_action(text) == (expected, True)


@pytest.mark.parametrize("text", [
    "", "no tags at all", "<search>unclosed", "<search></search>", "<answer>   </answer>",
    "<search>a <answer>b</answer></search>",  # both kinds before the first closing tag
    "<search><search>a</search>",  # a tag twice
    "<think>x</think><action>search[a]</action>", None, 17,
])
def test_parser_rejects_malformed_output(text):
    assert parse_action(text) == (None, False)


# ---------------------------------------------------------------- exact match
@pytest.mark.parametrize("prediction, gold, hit", [
    ("The Silver Orchard", "Silver Orchard", True),
    ("  brellin. ", "Brellin", True),
    ("an engineer", "engineer", True),
    ("Orin  Valdek!", "orin valdek", True),
    ("Brellin Bay", "Brellin", False),
    ("1874", "1875", False),
    ("Theater", "ater", False),  # only whole-word articles go
])
def test_exact_match_after_search_r1_normalisation(prediction, gold, hit):
    assert exact_match(prediction, [gold]) is hit


def test_normalize_answer():
    assert normalize_answer("  The  Quick, Brown-Fox!  ") == "quick brownfox"
    assert normalize_answer("A an THE") == ""


# ---------------------------------------------------------------- episode and reward
def test_search_then_answer_rewards_exact_match(env):
    task = env.task_panel("train", 40, 5)[0]
    assert env.reset(task) == "" and len(env.admissible_actions) == 2
    result = env.step(f"<search>{task.payload.queries[0]}</search>")
    assert result.observation.startswith("\n<information>Doc 1(Title: ") and not result.done
    assert result.info["valid_action"] and result.reward == 0.0
    assert 1 <= len(read_information(result.observation)) <= env.top_k  # only passages sharing a word
    result = env.step(f"<answer>{task.payload.golden_answers[0].upper()}.</answer>")
    assert result.done and result.reward == WIN_REWARD and result.info["won"] and result.info["score"] == 1.0
    assert env.step("<answer>again</answer>").info == {"valid_action": False, "won": True, "score": 1.0}


def test_wrong_answer_invalid_actions_and_the_turn_limit(env):
    task = env.task_panel("train", 40, 5)[1]
    env.reset(task)
    result = env.step(None)
    assert result.observation == INVALID_OBSERVATION and not result.info["valid_action"] and not result.done
    assert not env.step("click[buy now]").info["valid_action"]
    env.step("<search>anything</search>")
    result = env.step("<search>still searching</search>")
    assert result.done and result.info["turns"] == 4 and not result.info["won"] and result.reward == 0.0
    env.reset(task)
    result = env.step("<answer>certainly wrong</answer>")
    assert result.done and result.reward == 0.0 and result.info == {"valid_action": True, "won": False, "score": 0.0,
                                                                     "answer": "certainly wrong", "turns": 1}


def test_information_format_is_search_r1s(env):
    passages = env.world.passages[:2]
    text = format_information(passages)
    assert text == (f"\n<information>Doc 1(Title: {passages[0].title}) {passages[0].text}\n"
                    f"Doc 2(Title: {passages[1].title}) {passages[1].text}\n</information>\n")
    assert format_information([]) == "\n<information>No results.</information>\n"


# ---------------------------------------------------------------- expert and retrieval
def test_expert_wins_nearly_always_with_bm25(env):
    tasks = env.task_panel("val", 200, 0)
    outcomes, searches = {kind: [] for kind in DATA_SOURCES}, {kind: [] for kind in DATA_SOURCES}
    for task in tasks:
        result, actions = _play(env, task)
        outcomes[task.task_type].append(result.info["won"])
        searches[task.task_type].append(sum(a.startswith("<search>") for a in actions))
    for kind, wins in outcomes.items():
        assert wins and sum(wins) / len(wins) >= 0.95, kind
    mean = {kind: sum(counts) / len(counts) for kind, counts in searches.items()}
    assert mean["single_hop"] == mean["attribute"] == 1.0
    assert mean["bridge"] > 1.8 and mean["comparison"] > 1.8  # one result page sometimes shows both entities


def test_expert_wins_harder_settings():
    hard = SearchQAEnv(num_entities=1000, bridge_hops=3, look_alike_rate=0.6, landmark_rate=0.6)
    wins = [_play(hard, task)[0].info["won"] for task in hard.task_panel("test", 120, 0)]
    assert sum(wins) / len(wins) >= 0.9


def test_bm25_returns_the_gold_passage_for_single_hop_questions_at_top_3():
    env = SearchQAEnv(num_entities=1000, data_sources=["single_hop"], look_alike_rate=0.5, landmark_rate=0.5)
    tasks = env.task_panel("test", 150, 0)
    hits = [t.payload.gold_doc_ids[0] in {p.doc_id for p in env.retriever.retrieve([t.instruction], 3)[0]}
            for t in tasks]
    assert sum(hits) / len(hits) >= 0.8


# ---------------------------------------------------------------- prompts and privileged context
def test_compact_prompt_shows_question_history_and_results(env):
    task = env.task_panel("train", 10, 0)[0]
    info = format_information(env.world.passages[:1])
    parts = env.prompt(task, [Turn("", "<search>x</search>")], info, 1)
    text = parts.render()
    assert text.startswith(f"Question: {task.instruction}\n") and "[obs] none yet\n[act] <search>x</search>" in text
    assert "Doc 1(Title: " in text and "<search>query</search> or <answer>answer</answer>" in text
    assert parts.render(keep_history=0).count("[act]") == 0


def test_search_r1_prompt_follows_the_template():
    env = SearchQAEnv(num_entities=100, prompt_style="search_r1")
    task = env.task_panel("train", 3, 0)[0]
    first = env.prompt(task, [], "", 0).render()
    assert f"Your question: {task.instruction}" in first and "Prior to this step" not in first
    assert "<search> your query </search>" in first and "<answer>Beijing</answer>" in first
    later = env.prompt(task, [Turn("", "<search>q</search>")], "\n<information>Doc 1(Title: t) x\n</information>\n",
                       1).render()
    assert "already taken 1 step(s)" in later and "<search>q</search>\n" in later and "<information>Doc 1" in later


def test_privileged_skill_per_data_source_and_hint():
    env = SearchQAEnv(num_entities=100)
    tasks = {t.task_type: t for t in env.task_panel("train", 60, 0)}
    texts = {kind: env.privileged_context(task) for kind, task in tasks.items()}
    assert all(text.startswith("## General search skills") for text in texts.values())
    assert "Bridge questions" in texts["bridge"] and "Comparison questions" in texts["comparison"]
    assert len(set(texts.values())) == 4
    hinted = SearchQAEnv(num_entities=100, privileged="hint")
    task = tasks["bridge"]
    hint = hinted.privileged_context(task)
    assert f"<search>{task.payload.queries[1]}</search>" in hint
    assert hint.rstrip().endswith(f"<answer>{task.payload.golden_answers[0]}</answer>")


# ---------------------------------------------------------------- real question files
def test_question_files_with_a_local_corpus(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(row) for row in [
        {"id": "1", "contents": '"Paris"\nParis is the capital of France.'},
        {"id": "2", "contents": '"Berlin"\nBerlin is the capital of Germany.'},
    ]) + "\n")
    questions = tmp_path / "nq.jsonl"
    questions.write_text("\n".join(json.dumps(row) for row in [
        {"question": "what is the capital of france", "golden_answers": ["Paris"], "data_source": "nq"},
        {"question": "capital of germany?", "golden_answers": "Berlin", "data_source": "hotpotqa"},
    ]) + "\n")
    with pytest.raises(ValueError, match="retrieval_url"):
        SearchQAEnv(question_files={"train": str(questions)})
    env = SearchQAEnv(num_entities=100, corpus_file=str(corpus),
                      question_files={"train": str(questions), "val": str(questions)})
    assert env.task_types == ["hotpotqa", "nq"]  # known before any panel is drawn
    tasks = env.task_panel("val", 4, 0)
    assert {t.task_type for t in tasks} == {"nq", "hotpotqa"}
    task = next(t for t in tasks if t.task_type == "nq")
    assert task.instruction == "what is the capital of france?"
    env.reset(task)
    result = env.step("<search>capital of France</search>")
    assert "Doc 1(Title: Paris) Paris is the capital of France." in result.observation
    assert env.step("<answer>paris</answer>").info["won"]
    assert "Single-hop" in env.privileged_context(task)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SearchQAEnv(num_entities=100, corpus_file=str(corpus),
                    question_files={"train": str(tmp_path / "missing.jsonl")}).task_panel("train", 1, 0)
