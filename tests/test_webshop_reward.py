"""WebShop reward fidelity: thefuzz's integer rounding, WebShop's colour normalisation, option loop and type reward.

Every expected value below is worked out by hand from WebShop's ``web_agent_site/engine/goal.py`` and
``normalize.py`` (and thefuzz's ``fuzz.py``/``utils.py``); the comments show the arithmetic. The option count
follows WebShop's master by default (``goal_option_matches``); ``option_matches`` is the unmerged v2 branch's rule
(``option_rule="v2"``).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from rapidfuzz import fuzz

from craft_pl.envs.webshop.reward import (
    WEBSHOP_COLORS,
    attribute_matches,
    category_parts,
    fuzzy,
    get_reward,
    goal_option_matches,
    normalize_color,
    normalize_goal_option,
    option_matches,
    thefuzz_round,
    title_score,
    type_reward,
)


def product(**kw):
    base = dict(query="running shoes", product_category="clothing › shoes › athletic › running",
                name_nouns=("shoes",), attributes=(), title="Zola shoes", bullet_points=(), description="")
    base.update(kw)
    return SimpleNamespace(**base)


def goal(**kw):
    base = dict(query="running shoes", product_category="clothing › shoes › athletic › running",
                name_nouns=("shoes",), attributes=(), goal_options=(), price_upper=40.0)
    base.update(kw)
    return SimpleNamespace(**base)


# ------------------------------------------------------------------------------------------- thefuzz rounding
def test_thefuzz_round_is_pythons_round_half_to_even():
    # thefuzz: int(round(score)); Python rounds halves to the even integer
    assert [thefuzz_round(s) for s in (85.1, 85.4999, 85.5, 85.7, 86.5, 84.5, 100.0)] == [85, 85, 86, 86, 86, 84, 100]
    assert isinstance(fuzzy("a", "b"), int)


def test_score_between_85_and_85_5_rounds_down_and_does_not_match():
    a, b = "breathable mesh loafers", "breathable mesh slippers"
    # shared "breathable mesh"; indel("loafers", "slippers") = 7 + 8 - 2 * len("lers") = 7;
    # ratio of the two sorted strings = 1 - 7 / (23 + 24) = 40 / 47 = 85.106...
    raw = fuzz.token_set_ratio(a, b)
    assert raw == pytest.approx(100 * 40 / 47) and 85 < raw < 85.5
    assert fuzzy(a, b) == 85  # not > 85
    # as an attribute: no fuzzy match, and not a substring of the (empty) texts
    assert attribute_matches(product(attributes=(a,)), [b]) == 0
    # as a (non-size) option value: no colour in either string, so no match either
    assert normalize_color(a) == a and normalize_color(b) == b
    assert option_matches({"style": a}, [b]) == 0


def test_score_between_85_5_and_86_rounds_up_and_matches():
    a, b = "machine washable", "machine wash"
    # shared "machine"; indel("washable", "wash") = 4; 1 - 4 / (16 + 12) = 24 / 28 = 85.714...
    raw = fuzz.token_set_ratio(a, b)
    assert raw == pytest.approx(100 * 24 / 28) and 85.5 <= raw < 86
    assert fuzzy(a, b) == 86
    assert attribute_matches(product(attributes=(a,)), [b]) == 1
    assert option_matches({"style": a}, [b]) == 1


def test_thefuzz_preprocessing():
    # force_ascii deletes U+0080..U+00FF before rapidfuzz's default_process (which lower-cases, non-alnum -> space)
    assert fuzzy("café", "caf") == 100  # "caf" vs "caf"
    assert fuzzy("café", "cafe") == 86  # "caf" vs "cafe": 2 * 3 / 7 = 85.714 -> 86
    assert fuzzy("Non-Slip", "non slip") == 100
    assert fuzzy("", "x") == 0


# ------------------------------------------------------------------------------------- colour normalisation
def test_normalize_color_is_webshops_first_substring_in_list_order():
    assert len(WEBSHOP_COLORS) == 102 and list(WEBSHOP_COLORS) == sorted(WEBSHOP_COLORS)
    cases = {
        "navy blue": "blue",       # "blue" comes before "navy" in the list: no compound colours
        "light blue": "blue",      # "blue" before "light"
        "dark grey": "dark",       # "dark" is itself a list entry, before "grey"
        "rose gold": "gold",
        "standard": "tan",         # plain substring, no word boundary
        "washed denim": "ash",     # "ash" (in "washed") before "denim"
        "stonewash": "ash",        # "stonewash" is in the list but "ash" comes first
        "steelivy fuchsia": "fuchsia",  # WebShop's own test case
        "123alabaster": "alabaster",
        "Black": "Black",          # case-sensitive: no entry occurs, unchanged
        "Navy Blue": "Navy Blue",
        "xl": "xl",
        "": "",
    }
    assert {text: normalize_color(text) for text in cases} == cases


def test_options_compare_normalised_colours():
    assert option_matches({"color": "navy blue"}, ["light blue"]) == 1  # "blue" == "blue"
    assert option_matches({"color": "rose gold"}, ["gold"]) == 1
    assert option_matches({"color": "Black"}, ["black"]) == 1  # unnormalised, but the fuzzy score lower-cases
    assert option_matches({"color": "black"}, ["navy"]) == 0


# ----------------------------------------------------------------------------------------------- option loop
def test_option_loop_runs_over_purchased_options():
    # each purchased option counts at most once, however many goal options it matches
    assert option_matches({"color": "black"}, ["black", "black"]) == 1
    assert option_matches({"color": "black", "size": "9"}, ["black", "9"]) == 2
    assert option_matches({"color": "red", "size": "9"}, ["blue", "9"]) == 1
    assert option_matches({}, ["black"]) == 0


def test_size_options_match_exactly_others_fuzzily():
    # "size" (any case) is WebShop's only exact-match option
    assert option_matches({"size": "x-large"}, ["large"]) == 0
    assert option_matches({"Size": "Large"}, ["large"]) == 0
    assert option_matches({"fit": "x-large"}, ["large"]) == 1  # tokens {x, large} contain {large}: 100
    assert option_matches({"size": "large"}, [("size", "large")]) == 1  # (name, value) goal pairs: values only


def test_unmatched_option_found_in_product_text_counts():
    p = product(title="Zola water resistant watch", description="Large capacity; fits a phone.")
    # "large" misses the exact size match but occurs in the lower-cased description
    assert option_matches({"size": "large"}, ["small"], p) == 1
    # "standard" normalises to "tan", which occurs in "resistant"
    assert option_matches({"style": "standard"}, ["pro"], p) == 1
    assert option_matches({"style": "standard"}, ["pro"]) == 0  # no product: no text look-up
    assert option_matches({"size": "small"}, ["medium"], p) == 0


def test_v2_extra_purchased_option_can_push_reward_above_one_and_master_cannot():
    p = product(attributes=("non slip",), description="large capacity")
    g = goal(attributes=("non slip",), goal_options=(("color", "black"),))
    for rule in ("master", "v2"):
        exact = get_reward(p, g, 35.0, {"color": "black"}, rule)
        assert (exact.attribute_matches, exact.option_matches, exact.r_price) == (1, 1, True)
        assert exact.total == 1.0 and exact.won
    # v2: the size was not asked for, but "large" is in the description: (1 + 2 + 1) / (1 + 1 + 1) = 4 / 3, no win
    extra = get_reward(p, g, 35.0, {"color": "black", "size": "large"}, "v2")
    assert extra.option_matches == 2 and extra.total == pytest.approx(4 / 3) and not extra.won
    # master counts per goal option: the one goal option is matched once: (1 + 1 + 1) / 3 = 1, a win
    extra = get_reward(p, g, 35.0, {"color": "black", "size": "large"})
    assert extra.option_matches == 1 and extra.total == 1.0 and extra.won


# -------------------------------------------------------------------------------- WebShop master's option rule
def test_master_normalises_a_goal_pair_only_by_an_equal_colour():
    # normalize_color(("color", "blue")): "blue" in ("color", "blue") is tuple membership (equality) -> "blue"
    assert normalize_goal_option(("color", "blue")) == "blue"
    # "navy blue" equals no colour: the pair stays a pair (v2 would normalise the value to "blue")
    assert normalize_goal_option(("color", "navy blue")) == ("color", "navy blue")
    assert normalize_goal_option("navy blue") == "blue"  # a bare value: substring rule, as purchased values


def test_master_counts_each_goal_option_once_whatever_matches_it():
    # the pair's str "('color', 'navy blue')" -> tokens {color, navy, blue}; purchased "navy blue" -> "blue":
    # tokens {blue} lie inside them, token_set_ratio 100 > 85
    assert goal_option_matches(["navy blue"], [("color", "navy blue")]) == 1
    # one purchased value matches two goal options: master counts 2 (v2, looping over purchases, counts 1)
    assert goal_option_matches(["black"], [("color", "black"), ("pattern", "black")]) == 2
    assert option_matches({"color": "black"}, ["black", "black"]) == 1
    # "x-large" vs "('size', 'large')": tokens {x, large} vs {size, large}: ratio("large", "large x") = 10/12 -> 83
    assert goal_option_matches(["x-large"], [("size", "large")]) == 0
    # no exact rule for sizes under master: "Large" vs "('size', 'large')" lower-cases to a subset -> 100
    assert goal_option_matches(["Large"], [("size", "large")]) == 1
    assert option_matches({"size": "Large"}, ["large"]) == 0  # v2: exact, case-sensitive
    # a value matched by the option's *name*: "size" lies in {size, large}
    assert goal_option_matches(["size"], [("size", "large")]) == 1
    assert goal_option_matches([], [("color", "black")]) == 0


def test_master_cannot_match_a_value_that_normalises_to_a_colour_inside_a_word():
    # purchased "standard" -> "tan" (a substring); the goal pair ("style", "standard") equals no colour and stays a
    # pair: tokens {tan} vs {style, standard} share nothing, so buying exactly what the goal asks does not match
    assert goal_option_matches(["standard"], [("style", "standard")]) == 0
    assert option_matches({"style": "standard"}, [("style", "standard")]) == 1  # v2 normalises both sides


def test_master_never_looks_in_the_product_text():
    p = product(title="Zola water resistant watch", description="Large capacity; fits a phone.")
    g = goal(goal_options=(("size", "small"),))
    # v2: "large" misses the exact size match but is in the description -> 1 option; master: 0
    assert get_reward(p, g, 35.0, {"size": "large"}, "v2").option_matches == 1
    r = get_reward(p, g, 35.0, {"size": "large"})
    # (0 attributes + 0 options + 1 price) / (0 + 1 + 1) = 1/2, r_type 1
    assert r.option_matches == 0 and r.total == pytest.approx(1 / 2) and not r.won
    with pytest.raises(ValueError, match="option_rule"):
        get_reward(p, g, 35.0, {}, "v3")


# ----------------------------------------------------------------------------------------------- type reward
def test_title_score_counts_goal_nouns_with_repeats():
    # unique shared nouns / len(goal noun list)
    assert title_score(["laces"], ["boots", "boots", "boots", "boots", "laces"]) == pytest.approx(1 / 5)
    assert title_score(["shoes", "shoes"], ["shoes", "socks"]) == pytest.approx(1 / 2)
    assert title_score(["Shoes"], ["shoes"]) == 1.0  # both sides lower-cased
    # n_intersect is a set size (1), the denominator a list length (2): a repeated goal noun halves the score
    assert title_score(["shoes"], ["shoes", "shoes"]) == pytest.approx(1 / 2)
    assert title_score(["x"], []) == 0.2


def test_repeated_goal_nouns_change_r_type():
    other = dict(query="wall clock", product_category="home & kitchen › decor › clocks")
    # title score 1/5 = 0.2: not > 0.2, no query or category match -> 0.5 (unique counting would give 1/2 -> 1.0)
    g = goal(name_nouns=("boots", "boots", "boots", "boots", "laces"))
    assert type_reward(product(name_nouns=("laces",), **other), g) == 0.5
    # 1/11 < 0.1 -> 0.1 even with a query match (unique counting: 1/2 -> 1.0)
    g = goal(name_nouns=("boots",) * 10 + ("laces",))
    assert type_reward(product(name_nouns=("laces",)), g) == 0.1


def test_category_parts_are_stripped_not_lowercased():
    assert category_parts("Clothing › Shoes") == {"Clothing", "Shoes"}
    assert category_parts("shoes › ›") == {"shoes", ""}  # empty parts are kept
    other_query = dict(query="hiking boots", name_nouns=("a",))
    g = goal(name_nouns=("a", "b", "c", "d", "e"))  # title score 1/5 = 0.2: needs the category to stay at 1.0
    assert type_reward(product(product_category="clothing › shoes › outdoor", **other_query), g) == 1.0
    assert type_reward(product(product_category="Clothing › Shoes › Outdoor", **other_query), g) == 0.5
    # "a › a › b" shares {a, b} with "a › b › c"; "a › a › d" only {a} (WebShop's own cases)
    assert type_reward(product(product_category="a › a › b", **other_query), goal(product_category="a › b › c",
                                                                                     name_nouns=g.name_nouns)) == 1.0
    assert type_reward(product(product_category="a › a › d", **other_query), goal(product_category="a › b › c",
                                                                                     name_nouns=g.name_nouns)) == 0.5
    # two empty trailing parts and one shared word: {"shoes", ""} on both sides -> 2 shared parts
    assert type_reward(product(product_category="shoes › ›", **other_query), goal(product_category="shoes ›",
                                                                                     name_nouns=g.name_nouns)) == 1.0


def test_r_type_scales_the_fraction():
    other = dict(query="wall clock", product_category="home & kitchen › decor › clocks")
    p = product(name_nouns=("laces",), attributes=("non slip",), **other)
    g = goal(name_nouns=("boots", "boots", "boots", "boots", "laces"), attributes=("non slip", "arch support"),
             goal_options=(("color", "black"),))
    r = get_reward(p, g, 10.0, {"color": "black"})
    # (1 attribute + 1 option + 1 price) / (2 + 1 + 1) = 3/4, times r_type 0.5
    assert (r.r_type, r.attribute_matches, r.option_matches, r.r_price) == (0.5, 1, 1, True)
    assert r.total == pytest.approx(3 / 8) and not r.won
