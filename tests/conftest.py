import pytest
import torch

from craft_pl.model import Policy, TinyModelSpec
from tests.toy_env import PickWordEnv

TINY = TinyModelSpec(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                     intermediate_size=64, max_positions=512)


def toy_corpus() -> list[str]:
    env = PickWordEnv()
    texts = []
    for task in env.task_panel("train", 40, 0):
        parts = env.prompt(task, [], env.reset(task), 0)
        texts.append(parts.render() + env.format_response(task.payload))
    return texts


@pytest.fixture
def tiny_policy() -> Policy:
    policy = Policy(tiny=TINY)
    policy.build(toy_corpus(), None, seed=0)
    return policy


@pytest.fixture(autouse=True)
def _deterministic():
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
