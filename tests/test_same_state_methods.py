"""GiGPO and per-state CRAFT run from their YAML overlays through the CLI and log their same-state tags."""

import pytest

from tests.tb import read_scalars
from tests.test_training_toy import _fit


@pytest.mark.parametrize("overlay, tags", [
    ("configs/method/gigpo.yaml", ["train/step_advantage_mean", "rollout/anchor_groups", "rollout/anchor_shared_rows"]),
    ("configs/method/craft_state.yaml", ["pillar/cti/anchor_coverage", "rollout/anchor_shared_rows"]),
])
def test_same_state_methods_train_from_yaml_and_log_their_tags(tmp_path, overlay, tags):
    cli, root = _fit(tmp_path, "run", [f"--config={overlay}", "--trainer.max_epochs=1"])
    scalars = read_scalars(root)
    for tag in tags:
        assert tag in scalars, tag
    coverage = scalars["rollout/anchor_shared_rows"][0][1]
    assert 0.0 <= coverage <= 1.0
    assert len(scalars["train/loss"]) == 2  # one RL step of two mini-batches
