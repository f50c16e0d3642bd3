"""A teacher that is sometimes wrong on purpose: ``hint_reliability`` and ``hint_seed`` on WebShop, Search-QA and
ALFWorld.

Which tasks get a wrong hint depends on the task id and ``hint_seed`` only; a wrong hint looks like a right one and
loses when followed to the letter; warm-start demonstrations keep the right hints; r = 1 changes no hint; the step's
share of correct hints and the privileged evaluation split by it are logged.
"""

import random
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import seed_everything

from craft_pl.batch import DataFacts, Task, Trajectory
from craft_pl.envs.base import hint_draw
from craft_pl.envs.search_qa import SearchQAEnv
from craft_pl.envs.search_qa.privileged import hint_text as search_hint_text
from craft_pl.envs.webshop import WebShopEnv
from craft_pl.evaluation import success_by_hint
from craft_pl.loss import LossRecipe
from craft_pl.module import CraftModule
from craft_pl.objective import Objective
from craft_pl.rollout.demonstrations import demonstrations
from craft_pl.rollout.engine import Generation, GenerationEngine, SamplingParams
from craft_pl.rollout.experience import ExperienceMaker
from craft_pl.seeding import derive_seed

WEBSHOP_ARGS = {"num_products": 600}
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ALFWORLD_ARGS = {"num_receptacles": 5, "num_distractors": 2, "max_plan_length": 8, "train_games": 6,
                 "eval_games": 6}
"""tests/test_alfworld.py's room settings, with the smallest pool that still spans several task types."""
HINT_DRAW_GOLDEN = 0.31349908581666885
"""``hint_draw("webshop/train/0/00000", 0)``, a literal: every process and machine must draw the same."""


@pytest.fixture(scope="module")
def webshop() -> WebShopEnv:
    return WebShopEnv(privileged="hint", hint_reliability=0.0, **WEBSHOP_ARGS)


@pytest.fixture(scope="module")
def search_qa() -> SearchQAEnv:
    return SearchQAEnv(num_entities=200, privileged="hint", hint_reliability=0.0)


def unreliable_ids(env, tasks) -> set[str]:
    return {task.task_id for task in tasks if not env.hint_is_reliable(task)}


# ---------------------------------------------------------------------------------------- which tasks mislead
@pytest.mark.parametrize("make", [
    lambda r, **kw: WebShopEnv(privileged="hint", hint_reliability=r, **WEBSHOP_ARGS, **kw),
    lambda r, **kw: SearchQAEnv(num_entities=200, privileged="hint", hint_reliability=r, **kw),
], ids=["webshop", "search_qa"])
def test_the_share_of_unreliable_tasks_is_close_to_one_minus_r(make):
    tasks = make(1.0).task_panel("train", 400, 0)
    for r in (0.0, 0.3, 0.5, 0.8, 1.0):
        share = len(unreliable_ids(make(r), tasks)) / len(tasks)
        assert abs(share - (1 - r)) <= 0.06, (r, share)  # 400 draws: one standard deviation is at most 0.025
    half = make(0.5)
    assert unreliable_ids(make(0.8), tasks) <= unreliable_ids(half, tasks) <= unreliable_ids(make(0.3), tasks)
    assert all(half.privileged_context(t) != half.privileged_context(t, reliable_only=True)
               for t in tasks if t.task_id in unreliable_ids(half, tasks))


def test_the_unreliable_tasks_depend_only_on_the_task_id_and_hint_seed(monkeypatch):
    tasks = SearchQAEnv(num_entities=200).task_panel("val", 300, 0)
    chosen = []
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # seed_everything sets it; put it back afterwards
    with torch.random.fork_rng():
        saved = random.getstate(), np.random.get_state()
        for seed, settings in ((0, {}), (1, {"prompt_style": "search_r1", "max_turns": 6}), (123, {"top_k": 5})):
            seed_everything(seed)  # the run seed, the global RNGs and the environment's other settings change nothing
            chosen.append(unreliable_ids(SearchQAEnv(num_entities=200, privileged="hint", hint_reliability=0.5,
                                                     **settings), tasks))
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    assert chosen[0] == chosen[1] == chosen[2] and 0 < len(chosen[0]) < len(tasks)
    other_seed = unreliable_ids(SearchQAEnv(num_entities=200, privileged="hint", hint_reliability=0.5,
                                            hint_seed=1), tasks)
    assert other_seed != chosen[0] and 0 < len(other_seed) < len(tasks)
    # a stable hash (not Python's salted ``hash``): the same number in every process and on every machine
    assert hint_draw("webshop/train/0/00000", 0) == HINT_DRAW_GOLDEN
    # the same task id is drawn alike in every environment: methods and environments share the unreliable tasks
    task = Task("any/task", "single_hop", "q")
    draws = {cls(privileged="hint", hint_reliability=0.5).hint_is_reliable(task) for cls in (WebShopEnv, SearchQAEnv)}
    assert len(draws) == 1
    # skills are never "wrong": the setting applies to hints only
    assert SearchQAEnv(num_entities=200, privileged="skill", hint_reliability=0.0).hint_is_reliable(tasks[0])


# ---------------------------------------------------------------------------------------- a wrong hint loses
def _follow_webshop(env: WebShopEnv, task: Task, hint: str) -> bool:
    """Search as the expert does, then click exactly what the hint says; whether that won."""
    observation = env.reset(task)
    expert = env.make_expert()
    expert.reset(task.instruction)
    result = env.step(expert.act(observation, env.admissible_actions))
    for action in re.findall(r"click\[[^\]]+\]|open #\S+", hint):
        result = env.step(f"click[{action[len('open #'):]}]" if action.startswith("open #") else action)
        if result.done:
            break
    return bool(result.info["won"])


def test_webshop_following_a_wrong_hint_loses_and_a_right_one_wins(webshop):
    for task in webshop.task_panel("val", 60, 0):
        wrong, right = webshop.privileged_context(task), webshop.privileged_context(task, reliable_only=True)
        assert wrong != right and wrong == webshop.privileged_context(task)  # deterministic
        pages = [line.split(":")[0] for line in right.splitlines()]  # the same pages, in the same order
        assert [line.split(":")[0] for line in wrong.splitlines()] == pages
        assert not _follow_webshop(webshop, task, wrong), wrong
        assert _follow_webshop(webshop, task, right), right


def _follow_search_qa(env: SearchQAEnv, task: Task, hint: str) -> bool:
    env.reset(task)
    for query in re.findall(r"<search>(.*?)</search>", hint):
        env.step(f"<search>{query}</search>")
    (answer,) = re.findall(r"<answer>(.*?)</answer>", hint)
    return bool(env.step(f"<answer>{answer}</answer>").info["won"])


def test_search_qa_following_a_wrong_hint_loses_and_a_right_one_wins(search_qa):
    tasks = search_qa.task_panel("val", 120, 0)
    assert {t.task_type for t in tasks} == {"single_hop", "bridge", "comparison", "attribute"}
    for task in tasks:
        wrong, right = search_qa.privileged_context(task), search_qa.privileged_context(task, reliable_only=True)
        assert wrong != right and wrong == search_qa.privileged_context(task)
        assert len(wrong.splitlines()) == len(right.splitlines()) and "<answer>unknown</answer>" not in wrong
        assert not _follow_search_qa(search_qa, task, wrong), wrong
        assert _follow_search_qa(search_qa, task, right), right


@pytest.fixture(scope="module")
def alfworld(tmp_path_factory):
    pytest.importorskip("alfworld")
    pytest.importorskip("textworld")
    pytest.importorskip("fast_downward")
    from craft_pl.envs.alfworld import AlfWorldEnv

    env = AlfWorldEnv(cache_dir=str(tmp_path_factory.mktemp("alfworld_cache")), privileged="hint",
                      hint_reliability=0.0, max_turns=12, **ALFWORLD_ARGS)
    yield env
    env.close()


def _follow_alfworld(env, task: Task, hint: str) -> bool:
    env.reset(task)
    result = None
    for line in hint.splitlines()[1:]:
        result = env.step(line.split(" -> ", 1)[1])
        if result.done:
            break
    return bool(result is not None and result.info["won"])


@pytest.mark.slow
def test_alfworld_following_a_wrong_walkthrough_loses_and_the_right_one_wins(alfworld):
    from craft_pl.envs.alfworld.privileged import hint_text

    tasks = [Task(f"alfworld/train/x/{i}", g.task_type, g.goal, g) for i, g in enumerate(alfworld.pool("train"))]
    assert len({t.task_type for t in tasks}) >= 3
    for task in tasks:
        wrong, right = alfworld.privileged_context(task), alfworld.privileged_context(task, reliable_only=True)
        assert right == hint_text(task.payload.walkthrough) and wrong != right
        assert wrong.startswith("Hint:\nstep 1 -> ") and abs(len(wrong.splitlines()) - len(right.splitlines())) <= 2
        assert not _follow_alfworld(alfworld, task, wrong), wrong
        assert _follow_alfworld(alfworld, task, right), right
    full = type(alfworld)(cache_dir=alfworld.cache_dir, privileged="hint", hint_reliability=1.0, **ALFWORLD_ARGS)
    assert all(full.privileged_context(t) == hint_text(t.payload.walkthrough) for t in tasks)


# ---------------------------------------------------------------------------------------- r = 1, demos, checks
def _webshop_hint_before(goal, catalog, id_style, results_per_page) -> str:
    """``hint_text`` as it was before ``hint_reliability`` existed (kept verbatim to pin the text)."""
    index = catalog.by_asin.get((goal.answer_asin or goal.asin).lower(), goal.product_index)
    product = catalog.products[index]
    lines = ["Hint:"]
    name, page = product.asin.lower(), 1
    if id_style == "rank" and goal.answer_rank >= 0:
        page = goal.answer_rank // results_per_page + 1
        lines += [f"results page {p}: click[next >]" for p in range(1, page)]
        name = str(goal.answer_rank % results_per_page + 1)
    lines.append(f"results page {page}: open #{name}")
    item_clicks = [f"click[{value}]" for _, value in goal.goal_options] + ["click[buy now]"]
    lines.append("item page: " + " then ".join(item_clicks))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("id_style, goal_filter", [("rank", "first_try"), ("short", "none")])
def test_full_reliability_leaves_every_webshop_hint_as_it_was(id_style, goal_filter):
    default = WebShopEnv(privileged="hint", id_style=id_style, goal_filter=goal_filter, **WEBSHOP_ARGS)
    full = WebShopEnv(privileged="hint", id_style=id_style, goal_filter=goal_filter, hint_reliability=1.0,
                      hint_seed=7, **WEBSHOP_ARGS)
    for task in default.task_panel("train", 150, 0):
        before = _webshop_hint_before(task.payload, default.catalog, id_style, default.results_per_page)
        assert default.privileged_context(task) == full.privileged_context(task) == before
        assert full.true_privileged_context(task) == before


def test_full_reliability_leaves_every_search_qa_hint_as_it_was():
    default, full = SearchQAEnv(num_entities=200, privileged="hint"), SearchQAEnv(
        num_entities=200, privileged="hint", hint_reliability=1.0, hint_seed=3)
    for task in default.task_panel("train", 200, 0):
        item = task.payload
        before = "\n".join(["Hint:", *(f"search {i + 1} -> <search>{q}</search>" for i, q in enumerate(item.queries)),
                            f"then -> <answer>{item.golden_answers[0]}</answer>"]) + "\n"
        assert default.privileged_context(task) == full.privileged_context(task) == search_hint_text(item) == before


def test_warm_start_demonstrations_carry_only_correct_hints(search_qa):
    count, panel_seed = 30, 5
    demos = demonstrations(search_qa, count, panel_seed, history_length=2, privileged_fraction=1.0)
    tasks = search_qa.task_panel("train", count, derive_seed(panel_seed, "demonstrations"))
    right = {t.instruction: search_qa.privileged_context(t, reliable_only=True) for t in tasks}
    wrong = {t.instruction: search_qa.privileged_context(t) for t in tasks}
    assert demos and all(wrong[q] != right[q] for q in right)  # hint_reliability 0: every RL hint is wrong
    for prompt, _ in demos:  # privileged_fraction 1: every demonstration carries its task's hint, the right one
        hint, question = prompt.split("Question: ", 1)
        assert hint == right[question.split("\n", 1)[0]]


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), float("inf"), True, "0.5"])
@pytest.mark.parametrize("cls", ["webshop", "search_qa", "alfworld"])
def test_hint_reliability_outside_zero_one_is_refused_in_one_line(cls, value):
    if cls == "alfworld":
        env_cls = pytest.importorskip("craft_pl.envs.alfworld").AlfWorldEnv
    else:
        env_cls = {"webshop": WebShopEnv, "search_qa": SearchQAEnv}[cls]
    with pytest.raises(ValueError) as error:
        env_cls(privileged="hint", hint_reliability=value)
    message = str(error.value)
    assert "\n" not in message and "hint_reliability=" in message and "[0, 1]" in message, message
    with pytest.raises(ValueError, match="hint_seed='1' is invalid; use an int"):
        env_cls(privileged="hint", hint_seed="1")


def test_the_cli_refuses_a_bad_hint_reliability_before_any_model(capsys, monkeypatch):
    import craft_pl.model
    from craft_pl.cli import main

    monkeypatch.setattr(craft_pl.model.Policy, "build", lambda *a, **k: pytest.fail("a model was built"))
    for value in ("1.5", ".nan"):
        with pytest.raises(SystemExit):
            main(["fit", "--config", str(CONFIGS / "webshop.yaml"), "--data.env.init_args.hint_reliability", value])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert "Traceback" not in err and len(errors) == 1 and "hint_reliability" in errors[0], err


# ---------------------------------------------------------------------------------------- what is logged
class AnswerEngine(GenerationEngine):
    """Answers at once (one turn per episode), whatever the prompt."""

    def generate(self, model, tokenizer, prompt_ids, sampling, generator, stop_strings=("</answer>",)):
        response = tokenizer.encode("<think>ok</think><answer>x</answer>", add_special_tokens=False)
        return [Generation(list(response), [0.0] * len(response), True) for _ in prompt_ids]


def test_the_rl_step_logs_the_share_of_correct_hints_and_its_teacher_sees_the_wrong_ones(tiny_policy):
    env = SearchQAEnv(num_entities=200, privileged="hint", hint_reliability=0.5)
    tasks = env.task_panel("train", 16, 0)
    reliable = [env.hint_is_reliable(t) for t in tasks]
    assert 0 < sum(reliable) < len(tasks)
    recipe = LossRecipe(Objective(kl_coef=0.0), [])  # a teacher, no reference
    maker = ExperienceMaker(lambda: SearchQAEnv(num_entities=200, privileged="hint", hint_reliability=0.5), 1,
                            AnswerEngine(), 8)
    experience = maker.make(tiny_policy, tasks, 2, SamplingParams(1.0, 1.0, 16), torch.Generator().manual_seed(0),
                            recipe, env)
    assert experience.batch.ref_logp is None and experience.batch.advantages is not None
    assert experience.stats["teacher/hint_reliability"] == sum(reliable) / len(tasks)
    contexts = {text.task_id: text.privileged_context for text in experience.texts.values()}
    assert contexts == {t.task_id: env.privileged_context(t) for t in tasks}
    assert any(contexts[t.task_id] != env.true_privileged_context(t) for t, ok in zip(tasks, reliable) if not ok)
    for name, ok in (("reliable", True), ("unreliable", False)):  # the student's own episodes, split the same way
        episodes = [t.won for t in experience.trajectories if env.hint_is_reliable(t.task) == ok]
        assert len(episodes) == 2 * reliable.count(ok)
        assert experience.stats[f"rollout/success_rate_{name}"] == sum(episodes) / len(episodes)
    full = SearchQAEnv(num_entities=200, privileged="hint")  # every hint correct: nothing to split
    experience = maker.make(tiny_policy, tasks, 2, SamplingParams(1.0, 1.0, 16), torch.Generator().manual_seed(0),
                            recipe, full)
    assert not any(key.startswith("rollout/success_rate_") and key.endswith("reliable") for key in experience.stats)


def _episode(task: Task, won: bool) -> Trajectory:
    trajectory = Trajectory(task=task, group_id=0, trajectory_id=0)
    trajectory.won, trajectory.score = won, float(won)
    return trajectory


def test_validation_splits_privileged_success_by_hint_reliability():
    env = SearchQAEnv(num_entities=200, privileged="hint", hint_reliability=0.5)
    tasks = env.task_panel("val", 20, 0)
    reliable = [env.hint_is_reliable(t) for t in tasks]
    facts = DataFacts(env_name="SearchQAEnv", task_types=env.task_types, has_privileged_context=True,
                      group_size=2, demonstrations=lambda count, share, rate, run: [], evaluate=lambda: [[], []],
                      hint_is_reliable=env.hint_is_reliable)
    plain = [_episode(t, False) for t in tasks]
    privileged = [_episode(t, ok and i % 4 != 0) for i, (t, ok) in enumerate(zip(tasks, reliable))]
    module = SimpleNamespace(data_facts=facts, _evaluation=[plain, privileged])
    stats = CraftModule._evaluation_stats(module, "val")
    wins = [e.won for e, ok in zip(privileged, reliable) if ok]
    assert stats["val/success_rate_privileged_reliable"] == pytest.approx(sum(wins) / len(wins))
    assert stats["val/success_rate_privileged_unreliable"] == 0.0
    assert stats["val/success_rate_privileged"] == pytest.approx(sum(e.won for e in privileged) / len(tasks))
    module._evaluation = [plain, [e for e, ok in zip(privileged, reliable) if ok]]  # all reliable: no empty tag
    assert "val/success_rate_privileged_unreliable" not in CraftModule._evaluation_stats(module, "val")
    module._evaluation = [plain, []]  # no privileged run: no split
    assert not any("privileged" in key for key in CraftModule._evaluation_stats(module, "val"))


def test_success_by_hint_splits_episodes_by_whether_their_tasks_hint_is_correct():
    env = SearchQAEnv(num_entities=200, privileged="hint", hint_reliability=0.5)
    tasks = env.task_panel("train", 24, 0)
    episodes = [_episode(t, env.hint_is_reliable(t) != (i % 4 == 0)) for i, t in enumerate(tasks)]
    split = success_by_hint(episodes, env.task_types, env.hint_is_reliable, "rollout")
    for name, ok in (("reliable", True), ("unreliable", False)):
        part = [e.won for e in episodes if env.hint_is_reliable(e.task) == ok]
        assert 0 < len(part) < len(episodes)
        assert split[name] == pytest.approx(sum(part) / len(part))
    assert split["reliable"] != split["unreliable"]  # the draw makes the two shares differ: a swap would show
    only_reliable = [e for e in episodes if env.hint_is_reliable(e.task)]
    assert set(success_by_hint(only_reliable, env.task_types, env.hint_is_reliable, "rollout")) == {"reliable"}
