"""Resolve every arm of every ``configs/campaigns/*.yaml`` and reduce it to what decides its results.

``tests/data/campaign_arms.json`` holds, per arm, the digest of that reduction as the configs resolved before the
loss-room restructuring (commit d87ec4b), plus its objective and pillars in readable form. The reduction maps the
renames of that restructuring back to the old names, drops pillars listed with ``enabled: false`` (they run no code)
and the list order of pillars (it never changes a bit), so an equal digest means the same run.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
from pathlib import Path

import yaml

OLD_GRPO_DEFAULTS = {"gigpo_omega": 1.0, "gigpo_gamma": 0.95, "gigpo_norm": "mean_std_norm"}
PILLAR_RENAMES = {"sibling_advantage": "advantage"}
PILLAR_KNOBS_ADDED_LATER = {"fallback": "gate"}
"""Pillar knobs added later, at the value that reproduces what the arm ran with before them."""
IGNORED_TOP_LEVEL = ("config", "evaluation_report")
REMOVED_LEGACY_KNOBS = (("model", "policy", "init_args", "share_prompt_scoring"),
                        ("data", "engine", "init_args", "share_prefill"))
"""Knobs that only selected kept-for-comparison code paths; at their default (True) they change nothing."""
SAME_AS_BEFORE = ((("model", "objective", "init_args", "clip_ratio_high"), (None,)),
                  (("data", "dynamic_sampling"), (False,)),
                  (("data", "val_signal"), (True, False)),  # diagnostics before RL: logged, never trained on
                  (("data", "env_workers"), ("thread",)),
                  (("data", "env", "init_args", "option_rule"), ("v2",)),
                  (("data", "invalid_history"), ("placeholder",)),
                  (("model", "policy", "init_args", "recovery_demo_run"), (0.0,)),
                  (("model", "policy", "init_args", "warm_start", "student_episodes"), (0,)),
                  (("model", "policy", "init_args", "warm_start", "student_steps"), (1000,)),
                  (("model", "policy", "init_args", "warm_start", "student_temperature"), (1.0,)))
"""Knobs added later, at the values that reproduce what the arm ran with before them."""


def _old_objective_layout(objective: dict) -> dict:
    """The objective with its advantage estimator written as the old string switch and ``gigpo_*`` keys."""
    init_args = dict(objective.get("init_args") or {})
    estimator = init_args.pop("advantage", None)
    if "advantage_eps" not in init_args and estimator is None:  # the new code's default estimator
        estimator = {"class_path": "craft_pl.advantages.GRPOAdvantage", "init_args": {"eps": 1e-6, "norm_by_std": True}}
    if isinstance(estimator, dict):
        name = estimator["class_path"].rsplit(".", 1)[-1]
        args = estimator.get("init_args") or {}
        if name == "GRPOAdvantage":
            init_args.update(advantage="grpo", advantage_eps=args["eps"], norm_adv_by_std=args["norm_by_std"],
                             **OLD_GRPO_DEFAULTS)
        elif name == "GiGPOAdvantage":
            if args["step_grouping"] != "state_and_turn":  # the only grouping that existed before
                return {"class_path": objective["class_path"], "init_args": {"advantage": "gigpo/" + args["step_grouping"]}}
            init_args.update(advantage="gigpo", advantage_eps=args["eps"], gigpo_omega=args["omega"],
                             gigpo_gamma=args["gamma"], gigpo_norm=args["norm"],
                             norm_adv_by_std=args["norm"] == "mean_std_norm")
        else:
            init_args["advantage"] = name
    elif estimator is not None:
        init_args["advantage"] = estimator
    return {"class_path": objective["class_path"], "init_args": dict(sorted(init_args.items()))}


def _old_pillar_layout(pillars: list[dict] | None) -> list[dict] | None:
    if pillars is None:
        return None
    kept = []
    for pillar in pillars:
        args = {PILLAR_RENAMES.get(k, k): v for k, v in (pillar.get("init_args") or {}).items()
                if k not in PILLAR_KNOBS_ADDED_LATER or v != PILLAR_KNOBS_ADDED_LATER[k]}
        if args.get("enabled", True):
            kept.append({"class_path": pillar["class_path"], "init_args": dict(sorted(args.items()))})
    return sorted(kept, key=lambda p: p["class_path"])


def _pop(config: dict, path: tuple[str, ...], values: tuple) -> None:
    node = config
    for parent in path[:-1]:
        node = node.get(parent) if isinstance(node, dict) else None
    if isinstance(node, dict) and path[-1] in node and node[path[-1]] in values:
        node.pop(path[-1])


def reduce(config: dict, moved_to_master: bool = False) -> dict:
    """The parts of a resolved configuration that decide a run, in the old names. ``moved_to_master``: the arm was
    moved on purpose to WebShop master's option rule (the one difference allowed)."""
    config = copy.deepcopy(config)
    for key in IGNORED_TOP_LEVEL:
        config.pop(key, None)
    for path in REMOVED_LEGACY_KNOBS:
        _pop(config, path, (True,))
    for path, values in SAME_AS_BEFORE:
        _pop(config, path, values)
    if moved_to_master:
        _pop(config, ("data", "env", "init_args", "option_rule"), ("master",))
    if not config.get("data", {}).get("dynamic_sampling", False):
        config.get("data", {}).pop("max_gen_batches", None)
    model = config["model"]
    if model.get("objective") is not None:
        model["objective"] = _old_objective_layout(model["objective"])
    model["pillars"] = _old_pillar_layout(model.get("pillars"))
    return config


def digest(config: dict, moved_to_master: bool = False) -> str:
    return hashlib.sha256(json.dumps(reduce(config, moved_to_master), sort_keys=True).encode()).hexdigest()


def resolve_arms(main) -> dict[str, dict]:
    """``{campaign/environment/method: resolved config}`` for the first seed of every arm (``main`` = craft_pl's CLI)."""
    from craft_pl.tools.campaign import Campaign

    arms = {}
    for path in sorted(Path("configs/campaigns").glob("*.yaml")):
        campaign = Campaign.load(path)
        for run in campaign.runs():
            key = f"{path.stem}/{run.environment}/{run.method}"
            if key in arms:
                continue
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
                main(campaign.fit_arguments(run) + ["--print_config"])
            arms[key] = yaml.safe_load(buffer.getvalue())
    return arms


def record(arms: dict[str, dict]) -> dict[str, dict]:
    return {key: {"digest": digest(config), "objective": reduce(config)["model"].get("objective"),
                  "pillars": reduce(config)["model"]["pillars"]} for key, config in sorted(arms.items())}
