"""Every prompt shows all past turns until there are ``history_length`` of them, in rollouts and demonstrations alike.

Guards: the window was ``history[len(history) - history_length:]``, a negative start while fewer turns had passed,
so with ``history_length: 4`` the fourth turn's prompt showed 1 past turn instead of 3 (``examples/guess_number``
lost the feedback it needed; ``history_length`` 1 and 2 were not affected)."""

import pytest
import torch

from craft_pl.rollout.collector import Collector
from craft_pl.rollout.demonstrations import collect_demonstrations
from craft_pl.rollout.engine import SamplingParams
from tests.test_collector import ScriptedEngine
from tests.toy_env import PickWordEnv


@pytest.mark.parametrize("history_length", [1, 2, 3, 4, 6])
def test_rollout_prompts_show_every_past_turn_up_to_history_length(tiny_policy, history_length):
    env = PickWordEnv(max_turns=6)
    task = env.task_panel("train", 1, 0)[0]
    engine = ScriptedEngine(["<think>x</think> no action"] * 6)  # invalid: the episode goes on for all 6 turns
    collector = Collector(lambda: PickWordEnv(max_turns=6), history_length=history_length)
    (trajectory,) = collector.run([task], 1, tiny_policy, engine, SamplingParams(), torch.Generator())
    assert [len(turn.prompt_parts.history) for turn in trajectory.turns] == [min(t, history_length) for t in range(6)]


@pytest.mark.parametrize("history_length", [1, 3, 4])
def test_demonstration_prompts_show_every_past_turn_up_to_history_length(history_length):
    class Wandering(PickWordEnv):
        def make_expert(self):  # the expert tries two wrong words first: three turns per episode
            expert = super().make_expert()
            act = expert.act
            expert.act = lambda observation, admissible: ["zzz1", "zzz2"][len(seen)] if len(seen) < 2 else act(
                observation, admissible)
            return expert

    seen = []
    env = Wandering(max_turns=3)
    real_prompt = env.prompt
    env.prompt = lambda task, history, observation, step: seen.append(len(history)) or real_prompt(
        task, history, observation, step)
    demos, success = collect_demonstrations(env, env.task_panel("train", 1, 0), history_length)
    assert success == 1.0 and seen == [min(t, history_length) for t in range(3)]
