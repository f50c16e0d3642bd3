"""The warm start's DAgger stage: the student plays, the expert labels every state it reaches, cloning goes on."""

import pytest
import torch

from craft_pl.model import Policy
from craft_pl.model.warm_start import WarmStart, cache_key
from craft_pl.rollout.demonstrations import collect_demonstrations, student_demonstrations
from tests.conftest import TINY, toy_corpus
from tests.toy_env import PickWordEnv


def _scripted(responses):
    """A student answering each prompt with the next of ``responses``; the prompts it saw are recorded."""
    seen = []

    def respond(prompt: str) -> str:
        seen.append(prompt)
        return responses[len(seen) - 1]

    return respond, seen


def test_the_student_acts_and_the_expert_labels_every_state_it_reaches_won_or_lost():
    env = PickWordEnv(max_turns=3)
    task = env.task_panel("train", 1, 0)[0]
    wrong = next(w for w in ("apple", "brick") if w != task.payload)
    # an unparsable answer, an invalid word, then a valid wrong pick: lost on the third turn
    respond, seen = _scripted(["no tags", "<think>ok</think><action>zebra</action>",
                               f"<think>ok</think><action>{wrong}</action>"])
    rows, success = collect_demonstrations(env, [task], history_length=2, student=respond)
    assert success == 0.0
    assert [prompt for prompt, _ in rows] == seen  # the rows are the states the student reached, lost episode kept
    assert all(response == f"<think>ok</think><action>{task.payload}</action>" for _, response in rows)
    # both invalid turns show in the later history as the collector writes them
    assert "[invalid action]\n[invalid action]\n" in seen[2]


def test_a_student_that_follows_the_expert_yields_the_expert_demonstrations():
    env = PickWordEnv(max_turns=2)
    tasks = env.task_panel("train", 6, 1)
    expert_rows, expert_success = collect_demonstrations(env, tasks, 2)
    respond = lambda prompt: env.format_response(prompt.split("\n")[0].split()[-1])  # reads the target from the task
    rows, success = collect_demonstrations(env, tasks, 2, student=respond)
    assert (rows, success) == (expert_rows, expert_success) == (rows, 1.0)


def test_student_episodes_are_drawn_apart_from_the_demonstrations_tasks():
    env = PickWordEnv(max_turns=1)
    asked = []
    student_demonstrations(env, 8, panel_seed=0, history_length=2,
                           student=lambda prompt: asked.append(prompt.split("\n")[0]) or "")
    from craft_pl.rollout.demonstrations import demonstrations

    demo_tasks = [prompt.split("\n")[0] for prompt, _ in demonstrations(env, 8, 0, 2)]
    assert len(asked) == 8 and asked != demo_tasks


@pytest.mark.parametrize("field, value", [("student_episodes", -1), ("student_steps", 0), ("student_temperature", 0.0)])
def test_bad_student_settings_are_named(field, value):
    with pytest.raises(ValueError, match=f"warm_start.{field}"):
        WarmStart(**{field: value})


def test_the_first_stage_keeps_the_key_it_had_before_the_student_stage_existed():
    # recorded from the code before the student fields were added: every cached warm start keeps its key
    rows, vocab = [([1, 2, 3], [4, 5]), ([7], [8, 9, 10])], {"a": 0, "b": 1}
    for settings in (WarmStart(num_demos=10, steps=5, batch_size=4),
                     WarmStart(num_demos=10, steps=5, batch_size=4, student_episodes=7, student_steps=9,
                               student_temperature=0.5)):
        assert cache_key(settings, "tiny|x", vocab, rows, 3) == "089e855e59986430766feff1"


def _demos():
    return [(text.split("<think>")[0], "<think>ok</think>" + text.split("</think>")[1]) for text in toy_corpus()]


def _play(calls):
    """The data side's hand-over, with PickWordEnv and a real sampled student (the datamodule's own method)."""
    from craft_pl.datamodule import RolloutDataModule

    data = RolloutDataModule(env=lambda: PickWordEnv(max_turns=2), max_new_tokens=8)
    data.setup("fit")

    def play(count, model, tokenizer, encode_prompt, temperature, seed):
        calls.append((count, temperature, model.training))
        return data.student_demonstrations(count, model, tokenizer, encode_prompt, temperature, seed)

    return play


def test_the_student_stage_clones_on_more_rows_is_cached_and_reproduces_to_the_bit(tmp_path):
    settings = WarmStart(num_demos=10, steps=4, batch_size=4, student_episodes=6, student_steps=3,
                         student_temperature=1.0, cache_dir=str(tmp_path))
    calls = []
    first = Policy(tiny=TINY, warm_start=settings)
    first.build(toy_corpus(), _demos(), seed=1, student_demonstrations=_play(calls))
    assert calls == [(6, 1.0, False)]  # played once, in eval mode, with the settings' count and temperature
    assert len(first.warm_start_losses) == 4 + 3
    assert len(list((tmp_path / "warm_start").glob("*.pt"))) == 2  # one entry per stage
    plain = Policy(tiny=TINY, warm_start=WarmStart(num_demos=10, steps=4, batch_size=4, cache_dir=str(tmp_path)))
    plain.build(toy_corpus(), _demos(), seed=1)
    assert plain.warm_start_losses == first.warm_start_losses[:4]  # the first stage came from the cache
    assert any(not torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                        plain.model.state_dict().values()))
    again = Policy(tiny=TINY, warm_start=settings)
    again.build(toy_corpus(), _demos(), seed=1, student_demonstrations=_play([]))
    assert again.warm_start_losses == first.warm_start_losses
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_student_episodes_without_an_environment_that_labels_them_fail_with_the_fix(tmp_path):
    settings = WarmStart(num_demos=10, steps=2, batch_size=4, student_episodes=2, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="set warm_start.student_episodes: 0"):
        Policy(tiny=TINY, warm_start=settings).build(toy_corpus(), _demos(), seed=1)
