"""A retrieval client and server agree on the world or refuse: the server reports what it serves (corpus digest,
entity count, seed), an environment configured for another world stops before any warm start in one line naming
both, and the documented server command serves the world configs/search_qa.yaml uses. Loopback only, bounded."""

import argparse
import json
import re
import urllib.request
from pathlib import Path

import pytest
import yaml

from craft_pl.cli import main
from craft_pl.envs.search_qa import SearchQAEnv
from craft_pl.envs.search_qa.http_retriever import WorldMismatch
from craft_pl.envs.search_qa.retrieval import BM25Retriever, world_identity
from craft_pl.envs.search_qa.server import make_server, world_from_config
from craft_pl.envs.search_qa.world import build_world
from tests.test_search_qa_retrieval_server import _serving as serving

REPO = Path(__file__).resolve().parent.parent


def _serving(num_entities: int, seed: int = 0):
    """A server of the built-in world (``num_entities``, ``seed``) that reports it, serving in the background."""
    passages = build_world(num_entities, seed, 0.3, 0.3).passages
    return serving(make_server(BM25Retriever(passages), "127.0.0.1", 0,
                               identity=world_identity(passages, num_entities, seed)))


def test_the_server_reports_what_it_serves():
    with _serving(40, seed=3) as url:
        with urllib.request.urlopen(url.replace("/retrieve", "/health"), timeout=5) as response:
            health = json.loads(response.read())
    passages = build_world(40, 3, 0.3, 0.3).passages
    assert health == {"status": "ok", **world_identity(passages, 40, 3)}
    assert health["num_entities"] == 40 and health["seed"] == 3 and len(health["corpus_digest"]) == 16


def test_a_client_of_the_same_world_trains_and_of_another_refuses_in_one_line():
    with _serving(40) as url:
        SearchQAEnv(num_entities=40, retrieval_url=url, retrieval_timeout_s=5)  # agrees: no error
        with pytest.raises(WorldMismatch) as refused:
            SearchQAEnv(num_entities=60, retrieval_url=url, retrieval_timeout_s=5)
        with pytest.raises(WorldMismatch, match="seed 0.*seed 1"):
            SearchQAEnv(num_entities=40, seed=1, retrieval_url=url, retrieval_timeout_s=5)
    message = str(refused.value)
    assert "\n" not in message and url in message
    assert re.search(r"serves another world \(40 entities, seed 0, corpus digest [0-9a-f]{16}\) than data.env "
                     r"configures \(60 entities, seed 0, corpus digest [0-9a-f]{16}\)", message)
    assert "--num-entities 60 --seed 0" in message


def test_the_command_line_stops_before_any_model_loads(capsys):
    with _serving(40) as url:
        with pytest.raises(SystemExit) as stop:
            main(["--config", str(REPO / "configs" / "search_qa.yaml"), "--data.env.num_entities=60",
                  f"--data.env.retrieval_url={url}"], run=False)
    assert stop.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "serves another world (40 entities" in errors[0] and "(60 entities" in errors[0]


def test_the_documented_server_command_serves_configs_search_qa_world():
    docs = (REPO / "docs" / "environments.md").read_text() + (REPO / "README.md").read_text()
    commands = re.findall(r"python -m craft_pl\.envs\.search_qa\.server [^`\n]*", docs)
    assert commands and all("--config configs/search_qa.yaml" in c or "--corpus" in c for c in commands), commands
    assert "--config configs/search_qa.yaml" in commands[0]  # the first one a reader sees serves the config's world
    args = argparse.Namespace(num_entities=300, seed=0, look_alike_rate=0.3, landmark_rate=0.3, corpus=None,
                              config=str(REPO / "configs" / "search_qa.yaml"))
    world_from_config(args, argparse.ArgumentParser())
    configured = yaml.safe_load((REPO / "configs" / "search_qa.yaml").read_text())["data"]["env"]["init_args"]
    assert args.num_entities == configured["num_entities"] == 1000 and args.seed == 0 and args.corpus is None
