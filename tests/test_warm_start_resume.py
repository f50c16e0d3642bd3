"""A warm start that survives: SIGTERM or Ctrl-C during behaviour cloning saves its progress (one line saying where),
the next run with the same settings continues from there to the weights of an uninterrupted run, bit for bit, under
the same cache key; progress shows as plain lines when the output is not a terminal."""

import os
import signal

import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from craft_pl.model import warm_start
from craft_pl.model.tiny import tiny_qwen2

STEPS = 12


def _model() -> torch.nn.Module:
    return tiny_qwen2(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32,
                      max_positions=64, seed=0, pad_token_id=0, eos_token_id=1)


def _rows() -> list[tuple[list[int], list[int]]]:
    generator = torch.Generator().manual_seed(3)
    return [(torch.randint(2, 64, (int(n),), generator=generator).tolist(),
             torch.randint(2, 64, (3,), generator=generator).tolist())
            for n in torch.randint(3, 9, (20,), generator=generator)]


def _run(tmp_path, cache: str, stop_at: int | None = None, signal_number=signal.SIGTERM):
    """Warm-start a fresh model; with ``stop_at``, this process receives ``signal_number`` during that step."""
    settings = warm_start.WarmStart(num_demos=20, steps=STEPS, batch_size=4, cache_dir=str(tmp_path / cache))
    model, generator = _model(), torch.Generator().manual_seed(7)
    calls = []
    real = warm_start.response_logprobs

    def forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == stop_at:
            os.kill(os.getpid(), signal_number)
        return real(*args, **kwargs)

    warm_start.response_logprobs = forward
    try:
        losses = warm_start.warm_start_weights(model, _rows(), settings, "thekey", 0, generator)
    finally:
        warm_start.response_logprobs = real
    return model, losses, settings


@pytest.mark.parametrize("signal_number, exception", [(signal.SIGTERM, SIGTERMException),
                                                      (signal.SIGINT, KeyboardInterrupt)])
def test_an_interrupted_warm_start_continues_to_the_uninterrupted_weights(tmp_path, capsys, signal_number, exception):
    reference, reference_losses, _ = _run(tmp_path, "uninterrupted")
    previous = signal.getsignal(signal_number)
    with pytest.raises(exception):
        _run(tmp_path, "interrupted", stop_at=5, signal_number=signal_number)
    assert signal.getsignal(signal_number) == previous  # the handlers are put back
    folder = tmp_path / "interrupted" / "warm_start"
    progress = folder / "thekey.partial.pt"
    line = [x for x in capsys.readouterr().out.splitlines() if "stopped by" in x]
    assert line == [f"warm start: stopped by {signal.Signals(signal_number).name} at step 5/{STEPS}; progress saved "
                    f"to {progress}; the next run with the same settings continues from there"]
    assert sorted(p.name for p in folder.iterdir()) == ["thekey.partial.pt"]  # no cache entry for a partial result

    resumed, resumed_losses, _ = _run(tmp_path, "interrupted")
    assert "warm start: continuing from step 5" in capsys.readouterr().out
    assert resumed_losses == reference_losses
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert sorted(p.name for p in folder.iterdir()) == ["thekey.pt"]  # the same key; the progress file is gone


def test_progress_shows_as_plain_lines_when_the_output_is_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(warm_start, "PROGRESS_EVERY_S", 0.0)
    _run(tmp_path, "cache")
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("warm start: step ")]
    assert len(lines) == STEPS - 1 or len(lines) == STEPS
    assert lines[0].startswith(f"warm start: step 1/{STEPS}, loss ")


def test_a_damaged_progress_file_starts_from_step_zero(tmp_path, caplog):
    folder = tmp_path / "cache" / "warm_start"
    folder.mkdir(parents=True)
    (folder / "thekey.partial.pt").write_bytes(b"not a checkpoint")
    reference, reference_losses, _ = _run(tmp_path, "clean")
    model, losses, _ = _run(tmp_path, "cache")
    assert losses == reference_losses and "cannot continue from" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), model.state_dict().values()))
