"""Synthetic WebShop: reward, action parsing, pages, panels, expert, prompts, privileged context, speed."""

from __future__ import annotations

import inspect
from collections import Counter
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from craft_pl.envs.base import AgentEnv, PromptParts, Task, Turn
from craft_pl.envs.webshop import WebShopEnv, WebShopExpert
from craft_pl.envs.webshop.catalog import build_catalog
from craft_pl.envs.webshop.env import clear_caches
from craft_pl.envs.webshop.goals import make_goal, split_of
from craft_pl.envs.webshop.pages import admissible, parse_page
from craft_pl.envs.webshop.reward import (
    NO_PRICE_LIMIT,
    attribute_matches,
    get_reward,
    normalize_color,
    option_matches,
    price_upper,
    type_reward,
)
from craft_pl.envs.webshop.vocab import ATTRIBUTES, COLORS, SIZES, TASK_TYPES


@pytest.fixture(scope="module")
def env() -> WebShopEnv:
    return WebShopEnv()


BUTTONS = {"click[back to search]", "click[next >]", "click[< prev]"}


def item_clicks(env: WebShopEnv) -> list[str]:
    """The result-opening actions of a results page."""
    return [a for a in env.admissible_actions if a.startswith("click[") and a not in BUTTONS]


def run_expert(env: WebShopEnv, tasks: list[Task], strings_only: bool = True):
    """Play the expert; it only ever receives fresh str copies of the instruction, observation and actions."""
    expert = WebShopExpert()
    wins, turns = 0, []
    for task in tasks:
        observation = env.reset(task)
        expert.reset(str(task.instruction))
        for turn in range(env.max_turns):
            action = expert.act("".join(observation), [str(a) for a in env.admissible_actions])
            result = env.step(action)
            observation = result.observation
            if result.done:
                break
        wins += bool(result.info["won"])
        turns.append(turn + 1)
    return wins / len(tasks), turns


# ---------------------------------------------------------------------------------------------------- reward
def product(**kw):
    base = dict(query="running shoes", product_category="clothing › shoes › athletic › running",
                name_nouns=("shoes",), attributes=("non slip", "arch support", "memory foam"),
                title="Zola non slip arch support running shoes", bullet_points=("non slip", "arch support"),
                description="Zola running shoes: non slip, arch support, memory foam.")
    base.update(kw)
    return SimpleNamespace(**base)


def goal(**kw):
    base = dict(query="running shoes", product_category="clothing › shoes › athletic › running",
                name_nouns=("shoes",), attributes=("non slip", "arch support"),
                goal_options=(("color", "black"), ("size", "9")), price_upper=40.0)
    base.update(kw)
    return SimpleNamespace(**base)


def test_reward_full_match():
    r = get_reward(product(), goal(), 35.0, {"color": "black", "size": "9"})
    assert (r.r_type, r.attribute_matches, r.option_matches, r.r_price) == (1.0, 2, 2, True)
    assert r.total == 1.0 and r.won


def test_reward_partial_attributes_and_options():
    p = product(attributes=("non slip",), title="Zola non slip running shoes", bullet_points=("non slip",),
                description="Zola running shoes.")
    r = get_reward(p, goal(), 35.0, {"color": "black", "size": "10"})
    assert (r.attribute_matches, r.option_matches) == (1, 1)
    assert r.total == pytest.approx((1 + 1 + 1) / 5) and not r.won
    # no option chosen at all
    assert get_reward(product(), goal(), 35.0, {}).total == pytest.approx(3 / 5)


def test_reward_attribute_fuzzy_and_substring():
    # fuzzy: "non-slip" is token-set-equal to "non slip" after preprocessing
    p = product(attributes=("non-slip",), title="Zola shoes", bullet_points=(), description="")
    assert attribute_matches(p, ["non slip"]) == 1
    p = product(attributes=("NON SLIP grip",), title="Zola shoes", bullet_points=(), description="")
    assert attribute_matches(p, ["non slip"]) == 1  # thefuzz-style preprocessing lower-cases
    # substring of the description only
    p = product(attributes=(), title="Zola shoes", bullet_points=(), description="very good arch support here")
    assert attribute_matches(p, ["arch support", "non slip"]) == 1
    assert attribute_matches(product(attributes=("waterproof",), title="x", bullet_points=(), description=""),
                             ["non slip"]) == 0


def test_reward_price_over_ceiling():
    r = get_reward(product(), goal(price_upper=40.0), 40.01, {"color": "black", "size": "9"})
    assert r.r_price is False and r.total == pytest.approx(4 / 5) and not r.won
    assert get_reward(product(), goal(price_upper=40.0), 40.0, {"color": "black", "size": "9"}).won


def test_type_reward_steps():
    g = goal(name_nouns=("alpha", "beta", "gamma", "delta", "eps", "zeta"))  # 6 nouns
    other_cat = "home & kitchen › decor › clocks"
    # same query -> 1.0 (title score 1/6 > 0.1)
    assert type_reward(product(name_nouns=("alpha",)), g) == 1.0
    # no query/category match, title score 1/6 (not > 0.2, not < 0.1) -> 0.5
    p = product(query="wall clock", product_category=other_cat, name_nouns=("alpha",))
    assert type_reward(p, g) == 0.5
    # category shares 2 parts -> stays 1.0 with the same title score
    p = product(query="hiking boots", product_category="clothing › shoes › outdoor › boots", name_nouns=("alpha",))
    assert type_reward(p, g) == 1.0
    # title score 1/12 < 0.1 -> 0.1 (even with a query match)
    g12 = goal(name_nouns=tuple(f"n{i}" for i in range(12)))
    assert type_reward(product(name_nouns=("n0",)), g12) == 0.1
    # no shared noun -> 0.0 even with query and category matches
    assert type_reward(product(name_nouns=("boots",)), goal()) == 0.0
    # a goal without nouns scores 0.2: not > 0.2, so without query/category match -> 0.5
    p = product(query="wall clock", product_category=other_cat, name_nouns=("clock",))
    assert type_reward(p, goal(name_nouns=())) == 0.5
    # r_type scales the total
    r = get_reward(product(query="wall clock", product_category=other_cat, name_nouns=("alpha",)), g, 10.0,
                   {"color": "black", "size": "9"})
    assert r.r_type == 0.5 and r.total == pytest.approx(0.5)


def test_normalize_color_and_options():
    # WebShop's normalize_color: first colour of its alphabetical list found as a case-sensitive substring
    assert normalize_color("Navy Blue") == "Navy Blue"
    assert normalize_color("dark navy blue") == "blue"
    assert normalize_color("standard") == "tan"  # no word boundary in WebShop
    assert normalize_color("xl") == "xl"
    assert option_matches(["dark navy blue"], ["navy blue"]) == 1
    assert option_matches(["red", "9"], ["blue", "9"]) == 1
    assert option_matches(["black"], ["black", "black"]) == 1  # WebShop counts the purchased options
    # option values of one pool never match each other (so a wrong choice earns no credit)
    for bucket in TASK_TYPES:
        for pool in (COLORS[bucket], SIZES[bucket]):
            for a in pool:
                assert [option_matches([a], [b]) for b in pool] == [int(a == b) for b in pool]


def test_price_upper_rule():
    class Pick:
        def sample(self, values, k):
            return list(values[:k])

    assert price_upper(35.5, Pick()) == 50.0  # first 4 above: 40, 50, 60, 70 -> max of two picked
    assert price_upper(975.0, Pick()) == 990.0
    assert price_upper(985.0, Pick()) == NO_PRICE_LIMIT  # only 990 is above


def test_catalog_attributes_match_exactly(env):
    products = env.catalog.products
    for p in products[::7]:
        for a in ATTRIBUTES[p.task_type]:
            assert attribute_matches(p, [a]) == int(a in p.attributes), (p.title, a)


# ---------------------------------------------------------------------------------------------- parse_action
@pytest.mark.parametrize(
    "text,expected",
    [
        ("<think>ok</think><action>click[B7QX]</action>", "click[b7qx]"),
        ("  <think>\nlong\nthought</think>\n<action> search[Non Slip,  shoes] </action>\n", "search[non slip, shoes]"),
        ("<think></think><action>click[< prev]</action>", "click[< prev]"),
        ("<think>x</think><action>click[next >]</action>", "click[next >]"),
        ("<think>x</think><action>click[buy now]</action><|im_end|>", "click[buy now]"),
        ("<think>" + "a" * 10_000 + "</think><action>click[buy now]</action>", "click[buy now]"),
    ],
)
def test_parse_action_good(env, text, expected):
    assert env.parse_action(text) == (expected, True)


@pytest.mark.parametrize(
    "text",
    [
        "", None, 123, b"<think>x</think><action>click[a]</action>", "   ",
        "click[b7qx]",
        "<action>click[b7qx]</action>",
        "<think>x</think>",
        "<think>x</think><action></action>",
        "<think>x</think><action>click[]</action>",
        "<think>x</think><action>click[  ]</action>",
        "<think>x</think><action>buy it now</action>",
        "<think>x</think><action>jump[b7qx]</action>",
        "<think>x</think><action>click[a[b]]</action>",
        "<think>x</think><action>click[a]b]</action>",
        "<think>x</think><action>click[b7qx]",
        "<think><think>x</think></think><action>click[b7qx]</action>",
        "<think>x</think><action><action>click[b7qx]</action></action>",
        "<think>x<action>click[b7qx]</action></think>",
        "<action>click[b7qx]</action><think>x</think>",
        "<think>x</think>junk<action>click[b7qx]</action>",
        "<think>x</think><action>click[b7qx]</action> trailing",
        "<think>x</think><action>click[b7qx]<|im_end|>",
        "<think>x</think><action>click[b7qx]</action>junk<|im_end|>",
        "<think>x<action>click[b7qx]</action>",
        "\x00\ud800\U0001f600<think>\u200b</think><action>click[\x00]",
        "\U0001f600" * 10_000,
        "<think>" * 5_000,
        "<think>x</think><action>click[b7\nqx]</action>",
    ],
)
def test_parse_action_malformed(env, text):
    assert env.parse_action(text) == (None, False)


def test_parse_action_random_junk_never_raises(env):
    import random

    rng = random.Random(0)
    alphabet = "<>/[]thinkaco \n\x00é\U0001f600"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        action, ok = env.parse_action(text)
        assert (action is None) != ok


def test_format_response_round_trip(env):
    for action in ["search[non slip running shoes]", "click[b7qx]", "click[< prev]", "click[buy now]"]:
        response = env.format_response(action)
        assert env.parse_action(response) == (action, True)
        assert len(response) < len(action) + 40


# ---------------------------------------------------------------------------------------------- pages/steps
def test_invalid_actions_leave_state_unchanged(env):
    task = env.task_panel("val", 1, 0)[0]
    first = env.reset(task)
    for bad in [None, "click[buy now]", "click[b7qx]", "nonsense", "search[]", "click[]"]:
        before_obs, before_actions = env.observation, env.admissible_actions
        result = env.step(bad)
        assert result.info["valid_action"] is False and result.reward == 0.0 and not result.done
        assert result.observation == before_obs == first and env.admissible_actions == before_actions
    env.step("search[" + task.instruction.split("i need a ")[1].split(" with ")[0] + "]")
    results_obs = env.observation
    for bad in ["search[shoes]", "click[description]", "click[< prev]", "click[zzzz]", "click[buy now]"]:
        result = env.step(bad)
        assert not result.info["valid_action"] and result.observation == results_obs and not result.done


def test_pagination_and_item_pages():
    env = WebShopEnv(id_style="short")
    task = env.task_panel("val", 1, 0)[0]
    env.reset(task)
    assert env.admissible_actions == ["search[<your query>]"]
    env.step("search[shoes]")
    obs = env.observation
    assert "Page 1 (Total results: 50)" in obs and "Next >" in obs and "< Prev" not in obs
    page1 = item_clicks(env)
    assert len(page1) == 10 and all(re.fullmatch(r"click\[b\d\w\w\]", a) for a in page1)
    assert env.step("click[next >]").info["valid_action"]
    page2 = item_clicks(env)
    assert "Page 2 (Total results: 50)" in env.observation and "click[< prev]" in env.admissible_actions
    assert len(page2) == 10 and not set(page1) & set(page2)
    for _ in range(3):
        env.step("click[next >]")
    assert "Page 5" in env.observation and "click[next >]" not in env.admissible_actions
    assert not env.step("click[next >]").info["valid_action"]
    env.step("click[< prev]")
    assert "Page 4" in env.observation
    # item page, option, sub-page, back, buy
    item = item_clicks(env)[0]
    env.step(item)
    actions = env.admissible_actions
    assert actions[:2] == ["click[back to search]", "click[< prev]"] and actions[-4:] == [
        "click[description]", "click[features]", "click[reviews]", "click[buy now]"]
    option = actions[2]
    assert env.step(option).info["valid_action"]
    env.step("click[features]")
    assert env.admissible_actions == ["click[back to search]", "click[< prev]"]
    env.step("click[< prev]")
    assert env.observation.endswith("Buy Now") and env._state.selected  # the option survived the sub-page
    env.step("click[< prev]")
    assert "Page 4" in env.observation  # back from the item to the page it was opened from
    env.step(item)
    env.step(option)
    result = env.step("click[buy now]")
    assert result.done and result.reward in (0.0, 10.0) and 0.0 <= result.info["score"] <= 1.0
    assert result.reward == 10.0 * result.info["won"]
    after = env.step("click[buy now]")  # past the end: no crash, nothing happens
    assert after.done and after.reward == 0.0 and after.info["valid_action"] is False
    assert env.admissible_actions == []


def test_rank_ids_name_the_place_on_the_page(env):
    assert env.id_style == "rank"
    short = WebShopEnv(id_style="short")
    task = env.task_panel("val", 1, 0)[0]
    for e in (env, short):
        e.reset(task)
        e.step("search[shoes]")
        e.step("click[next >]")
    assert item_clicks(env) == [f"click[{i}]" for i in range(1, 11)]
    env.step("click[3]")
    short.step(item_clicks(short)[2])
    assert env.observation == short.observation  # the 13th result either way
    env.step("click[< prev]")
    assert "Page 2" in env.observation and not env.step("click[11]").info["valid_action"]


def test_max_turns_ends_episode():
    env = WebShopEnv(max_turns=3)
    env.reset(env.task_panel("val", 1, 0)[0])
    results = [env.step(None) for _ in range(5)]
    assert [r.done for r in results] == [False, False, True, True, True]
    assert results[2].info["won"] is False and results[2].info["score"] == 0.0


def test_buying_wrong_item_scores_below_one(env):
    task = env.task_panel("val", 1, 0)[0]
    env.reset(task)
    other = next(p for p in env.catalog.products if p.task_type != task.task_type)
    env.step(f"search[{other.query}]")
    env.step(item_clicks(env)[0])
    result = env.step("click[buy now]")
    assert result.done and not result.info["won"] and result.reward == 0.0 and result.info["score"] < 0.5


def test_observation_text_gives_the_admissible_actions(env):
    """The prompt's action list (parsed from the observation) equals the env's own list on every page."""
    expert = env.make_expert()
    for task in env.task_panel("val", 20, 3):
        obs = env.reset(task)
        expert.reset(task.instruction)
        for _ in range(6):
            assert admissible(parse_page(obs)) == env.admissible_actions
            result = env.step(expert.act(obs, env.admissible_actions))
            obs = result.observation
            if result.done:
                break
    env.reset(task)
    env.step("search[shoes]")
    env.step("click[next >]")
    env.step(item_clicks(env)[0])
    for target in ("click[description]", "click[< prev]", "click[reviews]"):
        env.step(target)
        assert admissible(parse_page(env.observation)) == env.admissible_actions


# ---------------------------------------------------------------------------------------------------- panels
@pytest.mark.slow
def test_panels_deterministic_disjoint_and_order_independent():
    clear_caches()
    a = WebShopEnv()
    val_a, test_a = a.task_panel("val", 150, 0), a.task_panel("test", 150, 0)
    clear_caches()
    b = WebShopEnv()
    test_b, val_b = b.task_panel("test", 150, 0), b.task_panel("val", 150, 0)
    assert val_a == val_b and test_a == test_b
    assert b.task_panel("val", 40, 0) == val_b[:40]  # a smaller panel is a prefix
    train = b.task_panel("train", 400, 0) + b.task_panel("train", 200, 1)
    sets = {
        "train": {t.instruction for t in train},
        "val": {t.instruction for t in val_b + b.task_panel("val", 100, 1)},
        "test": {t.instruction for t in test_b + b.task_panel("test", 100, 7)},
    }
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    assert len({t.instruction for t in val_b}) == 150 and len({t.task_id for t in val_b}) == 150
    assert val_b != b.task_panel("val", 150, 1)  # another panel seed gives another panel
    assert {t.task_type for t in val_b} == set(TASK_TYPES)
    shares = Counter(split_of(make_goal(b.catalog, 0, i, 2, 1).instruction) for i in range(0, 16000, 7))
    assert 0.75 < shares["train"] / sum(shares.values()) < 0.85 and 0.07 < shares["test"] / sum(shares.values())
    for task in val_b:
        assert task.instruction == task.payload.instruction and task.task_type == task.payload.task_type
        hash(task)  # payloads are frozen: tasks can go in sets


@pytest.mark.slow
def test_panel_same_in_a_fresh_process(env):
    code = ("from craft_pl.envs.webshop import WebShopEnv;"
            "print('|'.join(t.instruction for t in WebShopEnv().task_panel('test', 5, 3)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "|".join(t.instruction for t in env.task_panel("test", 5, 3))


def test_goals_are_webshop_instructions(env):
    pattern = re.compile(r"i need a [a-z ,-]+ with [a-z]+: [a-z0-9 ]+, and price lower than \d+\.\d\d dollars")
    for task in env.task_panel("train", 50, 0):
        g = task.payload
        assert pattern.fullmatch(task.instruction), task.instruction
        assert len(g.attributes) == 2 and len(g.goal_options) == 1
        target = env.catalog.products[g.product_index]
        assert target.price <= g.price_upper <= target.price + 40 and g.price_upper % 10 == 0
        assert set(g.attributes) <= set(target.attributes)


# ---------------------------------------------------------------------------------------------------- expert
def test_expert_uses_no_hidden_state():
    assert list(inspect.signature(WebShopExpert.__init__).parameters) == ["self"]
    env = WebShopEnv()
    expert = env.make_expert()
    assert isinstance(expert, WebShopExpert)
    run_expert(env, env.task_panel("val", 5, 0))
    for value in vars(expert).values():  # only text-derived state
        assert isinstance(value, (str, set, tuple)) or type(value).__name__ == "ParsedInstruction"


@pytest.mark.parametrize("split", ["val", "test"])
def test_expert_solves_panel(env, split):
    success, turns = run_expert(env, env.task_panel(split, 200, 0))
    assert success >= 0.95
    assert sum(turns) / len(turns) <= 4.5  # search, open, option, buy


def test_expert_solves_unfiltered_goals():
    # Unfiltered goals include some that no purchase wins under WebShop master's option rule (a value such as
    # "standard" normalises to the colour "tan" and then matches no goal pair); goal_filter drops them by default.
    env = WebShopEnv(goal_filter="none", options_per_goal=2, near_duplicates=3, id_style="short")
    success, _ = run_expert(env, env.task_panel("val", 150, 0))
    assert success >= 0.9
    env = WebShopEnv(goal_filter="none", options_per_goal=2, near_duplicates=3, id_style="short", option_rule="v2")
    success, _ = run_expert(env, env.task_panel("val", 150, 0))
    assert success >= 0.95


def test_expert_with_asin_ids_and_verl_prompt():
    env = WebShopEnv(id_style="asin", num_products=1000, prompt_style="verl_agent", results_per_page=5)
    assert all(re.fullmatch(r"B0[A-Z0-9]{8}", p.asin) for p in env.catalog.products)
    success, _ = run_expert(env, env.task_panel("test", 60, 0))
    assert success >= 0.95


# --------------------------------------------------------------------------------------------------- prompts
def test_compact_prompt(env):
    task = env.task_panel("val", 1, 0)[0]
    obs = env.reset(task)
    parts = env.prompt(task, [], obs, 0)
    assert isinstance(parts, PromptParts) and parts.preamble == f"Task: {task.instruction}\n"
    assert "search[<your query>]" in parts.current and "<think>" in parts.current
    expert = env.make_expert()
    expert.reset(task.instruction)
    action = expert.act(obs, env.admissible_actions)
    obs2 = env.step(action).observation
    history = [Turn(obs, action)]
    text = env.prompt(task, history, obs2, 1).render()
    assert f"[act] {action}" in text and "results page 1" in text
    for click in item_clicks(env):
        asin = click[6:-1]
        assert re.search(rf"\n[a-z ,-]+ \$[0-9.]+(?: to \$[0-9.]+)? \[{asin}\]\n", text)  # "title price [id]"
    assert len(text) < 1200
    assert env.prompt(task, history, obs2, 1).render(keep_history=0) == parts.preamble + env.prompt(
        task, history, obs2, 1).current


def test_verl_agent_prompt():
    env = WebShopEnv(prompt_style="verl_agent")
    task = env.task_panel("val", 1, 0)[0]
    obs = env.reset(task)
    first = env.prompt(task, [], obs, 0).render()
    assert f"Your task is to: {task.instruction}." in first
    assert "Your current observation is: 'Search'." in first and "'search[<your query>]'," in first
    assert "<think> </think>" in first and "<action> </action>" in first
    obs2 = env.step("search[shoes]").observation
    parts = env.prompt(task, [Turn(obs, "search[shoes]")], obs2, 1)
    text = parts.render()
    assert "Prior to this step, you have already taken 1 step(s)." in text
    assert "[Observation 1: 'Search', Action 1: 'search[shoes]']" in text
    assert "You are now at step 2 and your current observation is: 'Back to Search' [SEP] 'Page 1" in text
    assert "'click[next >]'," in text and len(parts.history) == 1


# ---------------------------------------------------------------------------------------------- privileged
def test_privileged_skill_per_task_type(env):
    assert env.task_types == list(TASK_TYPES)
    texts = {}
    for task_type in TASK_TYPES:
        task = Task("x", task_type, "i need a thing")
        texts[task_type] = env.privileged_context(task)
        assert texts[task_type].startswith("## General WebShop skills")
        assert texts[task_type] == env.privileged_context(task)
    assert len(set(texts.values())) == len(TASK_TYPES)
    assert "flavor" in texts["other"] and "size" in texts["footwear"]


def test_privileged_hint():
    env = WebShopEnv(privileged="hint")
    task = env.task_panel("val", 1, 0)[0]
    hint = env.privileged_context(task)
    rank = task.payload.answer_rank % env.results_per_page + 1
    assert f"results page 1: open #{rank}" in hint and f"click[{task.payload.goal_options[0][1]}]" in hint
    assert hint == env.privileged_context(task)
    # searching as the expert does, then following the hint's clicks, wins
    observation = env.reset(task)
    expert = env.make_expert()
    expert.reset(task.instruction)
    env.step(expert.act(observation, env.admissible_actions))
    for action in re.findall(r"click\[[^\]]+\]|open #\S+", hint):
        result = env.step(f"click[{action[len('open #'):]}]" if action.startswith("open #") else action)
    assert result.info["won"]


# ------------------------------------------------------------------------------------------ args and speed
@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"prompt_style": "long"}, "prompt_style"),
        ({"privileged": "oracle"}, "privileged"),
        ({"num_products": 5}, "num_products"),
        ({"num_products": 7000}, "num_products"),
        ({"options_per_goal": 3}, "options_per_goal"),
        ({"attributes_per_goal": 0}, "attributes_per_goal"),
        ({"num_product_types": 43}, "num_product_types"),
        ({"id_style": "uuid"}, "id_style"),
        ({"results_per_page": 20, "search_return_n": 10}, "search_return_n"),
        ({"max_turns": 0}, "max_turns"),
        ({"goal_filter": "all"}, "goal_filter"),
        ({"price_range_prob": 1.5}, "price_range_prob"),
    ],
)
def test_argument_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        WebShopEnv(**kwargs)


def test_is_an_agent_env(env):
    assert isinstance(env, AgentEnv) and env.max_turns == 15 and env.invalid_action_penalty == 0.1
    env.close()
    env.close()


def test_generation_speed_and_determinism():
    start = time.perf_counter()
    a = build_catalog(2000, 5, 21, 2, "short", 0.1)
    assert time.perf_counter() - start < 1.0
    clear_caches()
    start = time.perf_counter()
    WebShopEnv(num_products=2000, seed=5)
    assert time.perf_counter() - start < 2.0
    b = build_catalog(2000, 5, 21, 2, "short", 0.1)
    assert a.products == b.products
    assert a.products != build_catalog(2000, 6, 21, 2, "short", 0.1).products
    assert len({p.asin for p in a.products}) == 2000
    for p in a.products[:200]:
        assert re.fullmatch(r"B\d[A-Z0-9]{2}", p.asin) and " › " in p.product_category
        assert 2 <= len(p.attributes) <= 6 and p.task_type in TASK_TYPES
        assert p.contents == p.contents.lower() and p.title.lower() in p.contents
