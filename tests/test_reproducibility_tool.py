"""``python -m craft_pl.tools.reproducibility``: each piece's hash is a function of its inputs, and the warm-start
hash it prints is the hash of the weights the run actually caches."""

import json

import torch

from craft_pl.tools import reproducibility
from tests.test_training_toy import TOY_ARGS


def _run(capsys, *argv) -> str:
    reproducibility.main(list(argv))
    return capsys.readouterr().out


def test_corpus_tokenizer_and_warm_start_hashes_repeat_and_match_the_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CRAFT_PL_CACHE", str(tmp_path / "cache"))
    run_args = [*TOY_ARGS, "--model.policy.warm_start.steps=4", f"--trainer.default_root_dir={tmp_path / 'run'}"]
    corpus = tmp_path / "corpus.json"
    first = _run(capsys, "corpus", str(corpus), *run_args)
    texts = json.loads(corpus.read_text())
    assert texts and f"corpus rows {len(texts)} sha {reproducibility.sha(texts)}" in first
    trained = [_run(capsys, "tokenizer", str(corpus), "--vocab_size=300") for _ in range(2)]
    assert trained[0] == trained[1] and "rows>512" in trained[0]

    out = tmp_path / "warm_start.json"
    _run(capsys, "warm-start", str(out), *run_args)
    record = json.loads(out.read_text())
    assert record["steps"] == 4 and len(record["losses"]) == 4
    (cached,) = (tmp_path / "cache").rglob("*.pt")
    assert f"weights sha {record['weights_sha']} steps 4" in _run(capsys, "cache", str(cached))


def test_init_and_gradient_hashes_depend_on_the_seed_not_on_the_call(capsys):
    lines = _run(capsys, "init", "--seeds", "0", "1", "0").splitlines()
    hashes = [line.split("init sha ")[1].split()[0] for line in lines]
    assert hashes[0] == hashes[2] != hashes[1]
    threads = torch.get_num_threads()
    try:
        grads = _run(capsys, "threads", "--threads", "1", "1").splitlines()
    finally:
        torch.set_num_threads(threads)
    assert len(grads) == 2 and grads[0].split("grad sha")[1] == grads[1].split("grad sha")[1]
