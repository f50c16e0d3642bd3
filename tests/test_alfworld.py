"""ALFWorld on the real engine: generated games of all six types load in ALFWorld's own AlfredTWEnv and the planner
expert wins them; parsing, prompts, rewards, skipped settings, official-data layout, and a smoke fit via the CLI.

Games are generated once per test module into a temporary cache (the settings of configs/alfworld.yaml, small pools).
"""

import json
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("alfworld")
pytest.importorskip("textworld")
pytest.importorskip("fast_downward")

from craft_pl.envs.alfworld import TASK_TYPES, AlfWorldEnv, GameGenerator, GameRecord, GeneratorSettings  # noqa: E402
from craft_pl.envs.alfworld.engine import AlfWorldEngineError  # noqa: E402
from craft_pl.envs.alfworld.env import NOTHING_HAPPENS, WIN_REWARD, clear_caches  # noqa: E402
from craft_pl.envs.alfworld.privileged import skill_text  # noqa: E402
from craft_pl.envs.alfworld.text import parse_action  # noqa: E402
from craft_pl.envs.base import Task, Turn  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ENV_ARGS = {"num_receptacles": 5, "num_distractors": 2, "max_plan_length": 8, "train_games": 12, "eval_games": 6}
"""configs/alfworld.yaml's room settings with small pools."""


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("alfworld_cache"))


@pytest.fixture(scope="module")
def env(cache_dir) -> AlfWorldEnv:
    clear_caches()
    environment = AlfWorldEnv(cache_dir=cache_dir, max_turns=12, **ENV_ARGS)
    yield environment
    environment.close()


def play_expert(env: AlfWorldEnv, task: Task) -> tuple[bool, int, list[str]]:
    """The walkthrough expert through the agent's interface: (won, turns, every action it took was admissible)."""
    expert = env.make_expert()
    observation = env.reset(task)
    expert.reset(task.instruction)
    inadmissible = []
    for _ in range(env.max_turns):
        action = expert.act(observation, env.admissible_actions)
        if action not in env.admissible_actions:
            inadmissible.append(action)
        result = env.step(action)
        observation = result.observation
        if result.done:
            return bool(result.info["won"]), result.info["turns"], inadmissible
    return False, env.max_turns, inadmissible


# ---------------------------------------------------------------------- generator and engine
@pytest.mark.slow
def test_generated_games_cover_all_six_types_and_the_expert_wins_each(env):
    pool = env.pool("train")
    assert {game.task_type for game in pool} == set(TASK_TYPES)
    for task in env.task_panel("val", len(env.pool("val")), 0) + [Task("t", g.task_type, g.goal, g) for g in pool]:
        won, turns, inadmissible = play_expert(env, task)
        assert won and not inadmissible, task.payload.gamefile
        assert turns == len(task.payload.walkthrough) <= ENV_ARGS["max_plan_length"]


@pytest.mark.slow
def test_games_use_alfworld_layout_and_alfredtwenv_loads_and_plays_them(env, capsys):
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    pool = env.pool("train")
    gamefile = Path(pool[0].gamefile)
    assert gamefile.name == "game.tw-pddl" and (gamefile.parent / "traj_data.json").exists()
    split_dir = gamefile.parents[2]
    assert split_dir.name == "train" and split_dir.parent.name == "json_2.1.1"
    assert gamefile.parent.parent.name.startswith(pool[0].task_type + "-")
    config = {
        "env": {"goal_desc_human_anns_prob": 0, "task_types": [1, 2, 3, 4, 5, 6], "domain_randomization": False,
                "expert_type": "planner"},
        "dataset": {"data_path": str(split_dir), "num_train_games": -1},
        "general": {"training_method": "dagger"},
        "dagger": {"training": {"max_nb_steps_per_episode": 50}},
    }
    alfred = AlfredTWEnv(config, train_eval="train")
    assert sorted(alfred.game_files) == sorted(g.gamefile for g in pool)
    gym_env = alfred.init_env(batch_size=1)
    observations, infos = gym_env.reset()
    played = infos["extra.gamefile"][0]
    assert "Your task is to: " in observations[0] and "help" in infos["admissible_commands"][0]
    walkthrough = json.loads(Path(played).read_text())["walkthrough"]
    for command in walkthrough:
        observations, _, dones, infos = gym_env.step([command])
    assert infos["won"][0] and dones[0]
    gym_env.close()


def test_generation_is_cached_and_reproducible_from_the_seed(env, cache_dir, tmp_path):
    settings = env.settings
    cached = GameGenerator(settings, cache_dir).pool("train", 3)
    assert cached == env.pool("train")[:3]
    fresh = GameGenerator(settings, str(tmp_path)).pool("train", 3)
    assert [(g.task_type, g.goal, g.walkthrough) for g in fresh] == [(g.task_type, g.goal, g.walkthrough) for g in cached]
    for a, b in zip(fresh, cached):
        assert Path(a.gamefile).read_bytes() == Path(b.gamefile).read_bytes()
    other_seed = GameGenerator(GeneratorSettings(**{**settings.__dict__, "seed": 1}), str(tmp_path)).pool("train", 3)
    assert [g.goal for g in other_seed] != [g.goal for g in cached] or \
        [Path(g.gamefile).read_bytes() for g in other_seed] != [Path(g.gamefile).read_bytes() for g in cached]


def test_settings_that_cannot_yield_a_game_are_skipped_with_a_count(tmp_path):
    from alfworld.gen import constants

    kitchens = tuple(n for n in constants.TRAIN_SCENE_NUMBERS if n < 100)  # look_at is posed in no kitchen
    generator = GameGenerator(GeneratorSettings(task_types=("look_at_obj_in_light",), scenes=kitchens), str(tmp_path))
    assert generator.pool("train", 3) == []
    assert generator.reports["train"].skipped_games == 3
    too_short = GameGenerator(GeneratorSettings(task_types=("pick_and_place_simple",), max_plan_length=2),
                              str(tmp_path), attempts_per_game=2)
    assert too_short.pool("train", 1) == []
    assert too_short.reports["train"].failed_attempts == Counter({"plan longer than max_plan_length": 2})
    too_short.close()
    env = AlfWorldEnv(task_types=["look_at_obj_in_light"], scenes=list(kitchens), cache_dir=str(tmp_path),
                      train_games=2)
    with pytest.raises(ValueError, match="no playable train game.*2 of 2 skipped"):
        env.task_panel("train", 4, 0)


def test_official_data_layout_is_read_when_given(env, tmp_path):
    root = Path(env.pool("train")[0].gamefile).parents[3]
    official = AlfWorldEnv(data_dir=str(root.parent), cache_dir=str(tmp_path))
    games = official.pool("train")
    assert sorted(g.gamefile for g in games) == sorted(g.gamefile for g in env.pool("train"))
    by_file = {g.gamefile: g for g in env.pool("train")}
    assert all(g.goal == by_file[g.gamefile].goal and g.walkthrough == by_file[g.gamefile].walkthrough for g in games)
    with pytest.raises(ValueError, match="holds no ALFWorld games"):
        AlfWorldEnv(data_dir=str(tmp_path))


def test_engine_failure_names_the_game(env, tmp_path):
    broken = tmp_path / "game.tw-pddl"
    broken.write_text("{not json")
    task = Task("broken", TASK_TYPES[0], "put a pen in desk", GameRecord(str(broken), TASK_TYPES[0], "g", ()))
    with pytest.raises(AlfWorldEngineError, match=str(broken)):
        env.reset(task)


# ---------------------------------------------------------------------- parsing, prompts, rewards
@pytest.mark.parametrize("text, expected", [
    ("<think>ok</think><action>go to drawer 1</action>", ("go to drawer 1", True)),
    ("  <think>x</think>\n<action> Take  Pen 1 from Drawer 1 </action><|im_end|>", ("take pen 1 from drawer 1", True)),
    ("<action>go to drawer 1</action>", (None, False)),
    ("<think>ok</think>go to drawer 1", (None, False)),
    ("<think>ok</think><action>go to drawer 1</action><action>look</action>", (None, False)),
    ("<think>ok</think><action></action>", (None, False)),
    ("<think>ok</think><action>go to <drawer> 1</action>", (None, False)),
    ("<think>ok</think>junk<action>look</action>", (None, False)),
    ("<action>look</action><think>ok</think>", (None, False)),
    ("<think>ok</think><action>g\u00f6 t\u00f6 \u2603</action>", (None, False)),
    ("", (None, False)),
    (None, (None, False)),
    (b"<action>look</action>", (None, False)),
])
def test_parse_action(text, expected):
    assert parse_action(text) == expected


def test_prompts_list_admissible_commands_without_help(env):
    task = env.task_panel("train", 1, 0)[0]
    observation = env.reset(task)
    actions = env.admissible_actions
    assert actions and "help" not in actions
    compact = env.prompt(task, [], observation, 0).render()
    assert compact.startswith(f"Task: {task.instruction}.\n") and "Step 1." in compact
    assert ", ".join(actions) in compact and "Welcome" not in compact
    verl = AlfWorldEnv(prompt_style="verl_agent", cache_dir=env.cache_dir, **ENV_ARGS)
    verl.reset(task)
    first = verl.prompt(task, [], observation, 0)
    assert "Your task is to: " in first.render() and not first.history
    assert "'" + actions[0] + "'" in first.render() and "<action> </action>" in first.render()
    later = verl.prompt(task, [Turn(observation, actions[0])], "You arrive at drawer 1.", 3)
    assert "already taken 3 step(s)" in later.preamble and "observaitons" in later.preamble
    assert later.history == (f"\n[Observation 3: '{observation}', Action 3: '{actions[0]}']",)
    assert "You are now at step 4" in later.current
    verl.close()


def test_privileged_context_skills_per_type_and_walkthrough_hints(env):
    for task_type in TASK_TYPES:
        text = skill_text(task_type)
        assert text.startswith("## General ALFWorld skills") and text.count("## ") == 2
    task = env.task_panel("train", 1, 0)[0]
    hint = AlfWorldEnv(privileged="hint", cache_dir=env.cache_dir, **ENV_ARGS).privileged_context(task)
    assert hint.splitlines()[1:] == [f"step {i} -> {a}" for i, a in enumerate(task.payload.walkthrough, 1)]
    assert env.privileged_context(task) == skill_text(task.task_type)


def test_rewards_invalid_actions_and_horizon(env):
    task = env.task_panel("train", 1, 0)[0]
    env.reset(task)
    before = env.admissible_actions
    for action in (None, "fly to the moon", "help"):
        result = env.step(action)
        assert not result.info["valid_action"] and result.reward == 0.0 and not result.done
        assert result.observation == NOTHING_HAPPENS and env.admissible_actions == before
    walkthrough = task.payload.walkthrough
    rewards = [env.step(action) for action in walkthrough]
    assert all(r.info["valid_action"] for r in rewards)
    assert [r.reward for r in rewards] == [0.0] * (len(walkthrough) - 1) + [WIN_REWARD]
    assert rewards[-1].done and rewards[-1].info["won"] and rewards[-1].info["score"] == 1.0
    assert env.step(walkthrough[0]).done and env.admissible_actions == []
    short = AlfWorldEnv(cache_dir=env.cache_dir, max_turns=2, **ENV_ARGS)
    short.reset(task)
    results = [short.step("look"), short.step("look")]
    assert [r.done for r in results] == [False, True] and not results[-1].info["won"]
    assert short.invalid_action_penalty == 0.1 and AlfWorldEnv().max_turns == 50
    short.close()


@pytest.mark.slow
def test_recovery_demonstrations_show_invalid_and_off_plan_states_with_expert_labels(env):
    from craft_pl.rollout.demonstrations import Perturbation, collect_demonstrations

    long_env = AlfWorldEnv(cache_dir=env.cache_dir, max_turns=30, **ENV_ARGS)
    tasks = long_env.task_panel("train", 8, 0)
    noise = Perturbation(0.3, seed=1)
    demos, success = collect_demonstrations(long_env, tasks, history_length=2, noise=noise)
    shown, _ = collect_demonstrations(long_env, tasks, history_length=2, noise=Perturbation(0.3, seed=1),
                                      invalid_history="text")
    long_env.close()
    # the same seeded episodes; with ``text`` the history shows the command tried where RL's default shows the words
    assert [label for _, label in shown] == [label for _, label in demos]
    assert not any("[act] invalid action" in prompt for prompt, _ in shown)
    assert [a == b for (a, _), (b, _) in zip(demos, shown)] == ["[act] invalid action" not in a for a, _ in demos]
    assert success == 1.0 and noise.count > 0  # the expert recovers from every perturbation within 30 turns
    after_invalid = [i for i, (prompt, _) in enumerate(demos) if f"Observation: {NOTHING_HAPPENS}" in prompt]
    assert after_invalid, "no row shows the state after an invalid command"
    for i in after_invalid:  # an invalid command changed nothing: the expert asks again for the step it lost
        assert demos[i][1] == demos[i - 1][1]
        assert "[act] invalid action\nStep " in demos[i][0]  # the last turn of the history, written as in RL
    for prompt, response in demos:  # every label is an admissible command of its own state
        listed = prompt.split("Actions: ")[-1].split("\n")[0].split(", ")
        assert parse_action(response)[0] in listed
    clean, _ = collect_demonstrations(env, tasks, history_length=2)
    assert not any(NOTHING_HAPPENS in prompt for prompt, _ in clean)


@pytest.mark.slow
def test_exploring_expert_wins_without_walking_to_objects_it_has_not_seen(env):
    explorer_env = AlfWorldEnv(cache_dir=env.cache_dir, max_turns=16, expert="explorer", **ENV_ARGS)
    searched = 0
    for task in explorer_env.task_panel("train", 11, 0):
        expert, seen = explorer_env.make_expert(), ""
        observation = explorer_env.reset(task)
        expert.reset(task.instruction)
        actions = []
        for _ in range(explorer_env.max_turns):
            seen += " " + observation
            action = expert.act(observation, explorer_env.admissible_actions)
            assert action in explorer_env.admissible_actions
            words = action.split()
            if words[0] in ("take", "use"):  # acts only on an object an observation has shown
                assert f" {words[1]} {words[2]}" in seen, (action, seen)
            actions.append(action)
            result = explorer_env.step(action)
            observation = result.observation
            if result.done:
                break
        assert result.info["won"], (task.task_type, actions)
        searched += len(actions) > len(task.payload.walkthrough)
    assert searched > 0  # some targets were not where the first look goes: the search took extra steps
    from craft_pl.rollout.demonstrations import collect_demonstrations

    tasks = explorer_env.task_panel("train", 11, 0)
    plain, _ = collect_demonstrations(explorer_env, tasks, 2)
    hinted, _ = collect_demonstrations(explorer_env, tasks, 2, privileged=[True] * len(tasks))
    assert len(hinted) == sum(len(t.payload.walkthrough) for t in tasks) < len(plain)  # the hint's walkthrough
    explorer_env.close()
    with pytest.raises(ValueError, match="expert"):
        AlfWorldEnv(expert="oracle")


@pytest.mark.slow
def test_replans_reuse_one_planning_engine_and_their_plans_win(env, monkeypatch):
    import fast_downward

    loads = []
    real_load = fast_downward.load_lib
    monkeypatch.setattr(fast_downward, "load_lib", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    fresh = AlfWorldEnv(cache_dir=env.cache_dir, max_turns=30, **ENV_ARGS)
    for task in fresh.task_panel("train", 3, 1):
        fresh.reset(task)
        fresh.step(task.payload.walkthrough[0])
        fresh.step("look")  # off the stored plan: only a replan knows the way from here
        plan = fresh.replan()
        assert plan and fresh.replan() == plan
        results = [fresh.step(action) for action in plan]
        assert results[-1].info["won"] and all(r.info["valid_action"] for r in results)
    fresh.close()
    assert len(loads) <= 2  # one engine to play, one to plan: each load maps a 34 MB library copy for good


def test_task_panels_are_functions_of_the_seed(env):
    first = env.task_panel("train", 20, 3)
    assert [t.payload for t in first] == [t.payload for t in env.task_panel("train", 20, 3)]
    assert [t.payload for t in first] != [t.payload for t in env.task_panel("train", 20, 4)]
    val = env.task_panel("val", 6, 0)
    assert Counter(t.task_type for t in val) == Counter({t: 1 for t in TASK_TYPES})
    with pytest.raises(ValueError, match="split"):
        env.task_panel("dev", 2, 0)


# ---------------------------------------------------------------------- training through the CLI
@pytest.mark.slow
def test_smoke_fit_logs_success_per_task_type(env, cache_dir, tmp_path):
    from craft_pl.cli import main
    from tests.tb import read_scalars

    init = "--data.env.init_args."
    main(["fit", "--config", str(CONFIGS / "alfworld.yaml"), "--config", str(CONFIGS / "method" / "grpo.yaml"),
          "--config", str(CONFIGS / "smoke.yaml"), f"--trainer.default_root_dir={tmp_path / 'run'}",
          f"--model.policy.init_args.warm_start.cache_dir={tmp_path / 'cache'}",
          "--model.policy.init_args.warm_start.num_demos=12", "--trainer.max_epochs=1", "--data.val_tasks=6",
          "--data.val_privileged=false",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
          f"{init}cache_dir={cache_dir}", f"{init}train_games=12", f"{init}eval_games=6", f"{init}max_turns=6"])
    scalars = read_scalars(tmp_path / "run")
    assert "rollout/success_rate" in scalars and "train/loss" in scalars
    assert all(f"val/success_rate/{t}" in scalars for t in TASK_TYPES)
    assert any(tag.startswith("rollout/success_rate/") and tag.split("/")[-1] in TASK_TYPES for tag in scalars)
