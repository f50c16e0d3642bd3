"""Collector: lockstep episodes, rows, invalid actions, environment failures, prompt budgets."""

import pytest
import torch

from craft_pl.envs.base import PromptParts
from craft_pl.rollout.collector import Collector
from craft_pl.rollout.demonstrations import Perturbation, collect_demonstrations
from craft_pl.rollout.experience import rows_from_trajectories
from craft_pl.rollout.prompts import encode_prompt_parts
from craft_pl.rollout.engine import Generation, GenerationEngine, SamplingParams
from tests.toy_env import PickWordEnv


class ScriptedEngine(GenerationEngine):
    """Answers each prompt with the next scripted text; records how many prompts each call got."""

    def __init__(self, texts):
        self.texts = list(texts)
        self.calls = []

    def generate(self, model, tokenizer, prompt_ids, sampling, generator, stop_strings=("</action>",)):
        self.calls.append(len(prompt_ids))
        out = []
        for _ in prompt_ids:
            text = self.texts.pop(0)
            finished = not text.startswith("LONG")
            ids = tokenizer(text, add_special_tokens=False).input_ids or [tokenizer.pad_token_id]
            out.append(Generation(ids, [-0.5] * len(ids), finished))
        return out


def _run(policy, env_kwargs, texts, tasks=1, group=4):
    env = PickWordEnv(**env_kwargs)
    collector = Collector(lambda: PickWordEnv(**env_kwargs), history_length=2)
    engine = ScriptedEngine(texts)
    trajectories = collector.run(env.task_panel("train", tasks, 0), group, policy, engine,
                                 SamplingParams(), torch.Generator())
    return trajectories, engine


def test_siblings_run_in_lockstep_with_one_generate_call_per_turn(tiny_policy):
    task_word = PickWordEnv().task_panel("train", 1, 0)[0].payload
    good = f"<think>ok</think><action>{task_word}</action>"
    junk = "\u2603\x00<action>unclosed"
    texts = [good, junk, "", "LONG" + "x" * 50,  # turn 1: win, invalid, empty, over-long
             junk, good, "<think>a</think><action>brick</action>"]  # turn 2 for the three still running
    trajectories, engine = _run(tiny_policy, {"max_turns": 2}, texts)
    assert engine.calls == [4, 3]
    assert [len(t.turns) for t in trajectories] == [1, 2, 2, 2]
    assert [t.won for t in trajectories] == [True, False, True, task_word == "brick"]
    assert [r.valid_action for r in trajectories[1].turns] == [False, False]
    batch, _ = rows_from_trajectories(trajectories, penalty=0.1)
    assert batch.num_rows == 7
    assert batch.group_ids.tolist() == [0] * 7
    assert batch.turn_index.tolist() == [0, 0, 1, 0, 1, 0, 1]
    assert batch.rewards.tolist()[:4] == pytest.approx([10.0, -0.1, -0.1, 10.0 - 0.1])  # invalid turn: -0.1
    assert batch.response_mask.sum().item() == sum(len(r) for r in batch.response_ids)


def test_an_environment_that_raises_ends_only_its_trajectory(tiny_policy):
    task_word = PickWordEnv().task_panel("train", 1, 0)[0].payload
    bad_word = "heron" if task_word != "heron" else "apple"
    texts = [f"<think>x</think><action>{bad_word}</action>", f"<think>x</think><action>{task_word}</action>"]
    trajectories, _ = _run(tiny_policy, {"max_turns": 1, "fail_on": bad_word}, texts, group=2)
    assert trajectories[0].env_error and not trajectories[0].won
    assert trajectories[1].won and not trajectories[1].env_error


def test_history_is_dropped_before_the_prompt_is_cut(tiny_policy):
    tiny_policy.max_prompt_tokens = 40
    parts = PromptParts("Task: choose apple\n", tuple(f"[step {i} brick cloud delta]\n" for i in range(6)), "Now:\n")
    encoded = encode_prompt_parts(tiny_policy, parts)
    assert encoded.history_dropped > 0 and not encoded.cut and len(encoded.ids) <= 40
    assert tiny_policy.decode(encoded.ids).startswith("Task: choose apple")  # the task survives


def test_expert_demonstrations_only_keep_won_episodes():
    demos, success = collect_demonstrations(PickWordEnv(), PickWordEnv().task_panel("train", 10, 0), 2)
    assert success == 1.0 and len(demos) == 10
    assert all(response.startswith("<think>") for _, response in demos)


def test_an_environment_error_skips_one_expert_episode_not_the_warm_start(caplog):
    env = PickWordEnv(fail_on="apple")
    tasks = env.task_panel("train", 30, 0)
    demonstrations, success = collect_demonstrations(env, tasks, history_length=2)
    failing = sum(t.payload == "apple" for t in tasks)
    assert 0 < failing < len(tasks)
    assert len(demonstrations) == len(tasks) - failing  # one turn per won episode
    assert success == (len(tasks) - failing) / len(tasks)
    assert f"{failing} of {len(tasks)} expert episodes failed" in caplog.text


def test_perturbations_are_seeded_and_either_another_admissible_action_or_an_invalid_near_miss():
    admissible = ["go to desk 1", "go to bed 1", "take pen 1 from desk 1", "look"]
    noise, again = Perturbation(0.5, seed=3), Perturbation(0.5, seed=3)
    draws = [noise.replace("go to desk 1", admissible) for _ in range(400)]
    assert draws == [again.replace("go to desk 1", admissible) for _ in range(400)]
    executed = [d for d in draws if d is not None]
    assert noise.count == len(executed) and 150 < len(executed) < 250  # about half the turns at rate 0.5
    invalid = [d for d in executed if d not in admissible]
    assert invalid and len(invalid) < len(executed)  # both kinds occur
    assert "go to desk 1" not in executed  # never the expert's own action
    words = {w for a in admissible for w in a.split()}
    assert all(set(d.split()) <= words for d in invalid)  # near-misses from the state's own words
    assert all(Perturbation(0.0, seed=3).replace("look", admissible) is None for _ in range(50))
    with pytest.raises(ValueError, match="recovery_rate"):
        Perturbation(1.5, seed=0)


def _invalid_after_invalid(run: float) -> float:
    admissible = ["go to desk 1", "go to bed 1", "take pen 1 from desk 1", "look"]
    noise = Perturbation(0.3, seed=5, run=run)
    invalid = [(d is not None and d not in admissible) for d in (noise.replace("look", admissible) for _ in range(4000))]
    follows = [b for a, b in zip(invalid, invalid[1:]) if a]
    return sum(follows) / len(follows)


def test_invalid_perturbations_continue_into_runs_with_the_run_probability():
    # at run 0 a turn after an invalid one is invalid only by a fresh draw (rate 0.3 x one half x swaps that miss)
    assert _invalid_after_invalid(0.0) < 0.2
    # at run 0.75: 0.75 continue, and a fresh draw may still make the rest invalid
    assert 0.72 < _invalid_after_invalid(0.75) < 0.85
    with pytest.raises(ValueError, match="recovery_run"):
        Perturbation(0.2, seed=0, run=1.0)


def test_run_zero_draws_exactly_what_single_perturbations_drew_before_runs_existed():
    # the first draws of Perturbation(0.4, seed=9) recorded from the code before ``run`` was added: run 0 (the
    # default) keeps every warm start's demonstrations, and so its cache key, as they were
    admissible = ["go to desk 1", "go to bed 1", "take pen 1 from desk 1", "look"]
    before = [None, "take pen 1 from desk 1", "go to to 1", None, None, None, "desk", "take pen 1 from desk 1", None,
              None, "go to from 1", None]
    default, zero_run = Perturbation(0.4, seed=9), Perturbation(0.4, seed=9, run=0.0)
    assert [default.replace("look", admissible) for _ in range(12)] == before
    assert [zero_run.replace("look", admissible) for _ in range(12)] == before


def test_perturbed_episodes_that_are_lost_are_dropped_and_labels_stay_the_experts():
    env = PickWordEnv(max_turns=1)
    tasks = env.task_panel("train", 40, 0)
    demos, success = collect_demonstrations(env, tasks, 2, noise=Perturbation(0.5, seed=0))
    assert 0 < success < 1  # a perturbed pick is another word: that episode is lost and dropped
    assert all(response == f"<think>ok</think><action>{prompt.split()[2]}</action>" for prompt, response in demos)


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_a_recovery_rate_outside_zero_to_one_fails_when_the_policy_is_configured(rate):
    from craft_pl.model import Policy

    with pytest.raises(ValueError, match="recovery_demo_rate"):
        Policy(recovery_demo_rate=rate)
    with pytest.raises(ValueError, match="recovery_demo_run"):
        Policy(recovery_demo_run=rate)


@pytest.mark.parametrize("mode, shown", [("placeholder", ["[invalid action]\n", "[invalid action]\n"]),
                                         ("text", ["[zebra]\n", "[invalid action]\n"])])
def test_an_invalid_turn_shows_in_later_history_as_the_placeholder_or_as_the_command_written(tiny_policy, mode, shown):
    env = PickWordEnv(max_turns=2)
    collector = Collector(lambda: PickWordEnv(max_turns=2), history_length=2, invalid_history=mode)
    texts = ["<think>x</think><action>zebra</action>", "\u2603<action>unclosed",  # well-formed but not a word; junk
             "<think>x</think><action>brick</action>", "<think>x</think><action>brick</action>"]
    trajectories = collector.run(env.task_panel("train", 1, 0), 2, tiny_policy, ScriptedEngine(texts),
                                 SamplingParams(), torch.Generator())
    assert [t.turns[0].valid_action for t in trajectories] == [False, False]
    assert [t.turns[1].prompt_parts.history[-1] for t in trajectories] == shown


def test_history_action_rule_and_a_bad_mode_named():
    from craft_pl.batch import INVALID_ACTION, check_invalid_history, history_action
    assert history_action("go to desk 1", True, "placeholder") == "go to desk 1"
    assert history_action("go to desk 9", False, "placeholder") == INVALID_ACTION
    assert history_action("go to desk 9", False, "text") == "go to desk 9"
    assert history_action(None, False, "text") == INVALID_ACTION  # nothing parsable to show
    with pytest.raises(ValueError, match="invalid_history='verbatim'.*'placeholder'.*'text'"):
        check_invalid_history("verbatim")
