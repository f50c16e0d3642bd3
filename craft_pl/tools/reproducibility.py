"""Where do two runs' bits part? Hashes of each piece a warm start depends on, one command per piece.

Usage (``<craft_pl args>`` are those of ``python -m craft_pl validate``, e.g. ``--config configs/webshop.yaml``):

    python -m craft_pl.tools.reproducibility corpus OUT.json <craft_pl args>    the tokenizer corpus a run trains on
    python -m craft_pl.tools.reproducibility tokenizer CORPUS.json [--vocab_size 1024]   the tokenizer trained on it
    python -m craft_pl.tools.reproducibility init [--seeds 0 1]                 the tiny model's random init
    python -m craft_pl.tools.reproducibility threads [--threads 1 2 4 8]        gradient bits per torch thread count
    python -m craft_pl.tools.reproducibility warm-start OUT.json <craft_pl args>   the warm-started weights, then stop
    python -m craft_pl.tools.reproducibility cache FILE.pt ...                  weights in warm-start cache files

Each prints one line per result with sha256 prefixes, so two machines, library versions, thread counts or commits
(run with ``PYTHONPATH=<a git archive>``) can be compared piece by piece: corpus, tokenizer, initial weights, one
gradient, the whole warm start. ``benchmarks/results/teacher_investigation.md`` is a study made this way.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from craft_pl.model.tiny import TinyModelSpec, tiny_qwen2, train_tokenizer


def sha(value) -> str:
    """First 16 hex digits of the sha256 of a JSON-able value, a tensor dict (sorted by name) or bytes."""
    digest = hashlib.sha256()
    if isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
        for name, tensor in sorted(value.items()):
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    else:
        digest.update(value if isinstance(value, bytes) else json.dumps(value).encode())
    return digest.hexdigest()[:16]


def run_craft_pl(arguments: list[str]) -> None:
    """``python -m craft_pl <arguments>`` in this process (a patched hook stops it with SystemExit(0))."""
    from craft_pl.cli import main

    try:
        main(arguments)
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise


def corpus(out: Path, arguments: list[str]) -> None:
    """Dump the corpus the run's tokenizer would be trained on to ``out`` (JSON), then stop."""
    import craft_pl.model.loading as loading

    def dump(texts: list[str], vocab_size: int):
        out.write_text(json.dumps(texts))
        print(f"corpus rows {len(texts)} sha {sha(texts)} vocab_size {vocab_size} -> {out}", flush=True)
        raise SystemExit(0)

    real, loading.train_tokenizer = loading.train_tokenizer, dump
    try:
        run_craft_pl(arguments)
    finally:
        loading.train_tokenizer = real


def tokenizer(corpus_file: Path, vocab_size: int) -> None:
    """Train the built-in tokenizer on a dumped corpus; hashes of its vocabulary, merges and encoding, and lengths."""
    import tokenizers

    texts = json.loads(corpus_file.read_text())
    trained = train_tokenizer(texts, vocab_size)
    model = json.loads(trained.backend_tokenizer.to_str())["model"]
    ids = [trained(text, add_special_tokens=False).input_ids for text in texts]
    lengths = [len(row) for row in ids]
    print(f"tokenizers {tokenizers.__version__} vocab {len(trained)} sha {sha(sorted(trained.get_vocab().items()))} "
          f"merges {len(model['merges'])} sha {sha(model['merges'])} ids sha {sha(ids)} rows {len(texts)} "
          f"tokens/row {statistics.mean(lengths):.2f} max {max(lengths)} rows>512 {sum(n > 512 for n in lengths)}")


def tiny_model(seed: int, spec: TinyModelSpec) -> torch.nn.Module:
    """The built-in tiny model of ``spec`` with its random init from ``seed`` (pad id 0, EOS id 2)."""
    return tiny_qwen2(spec.vocab_size, spec.hidden_size, spec.num_layers, spec.num_heads, spec.num_kv_heads,
                      spec.intermediate_size, spec.max_positions, seed, 0, 2)


def init(seeds: list[int], spec: TinyModelSpec) -> None:
    """Hash of the tiny model's random initial weights for each seed."""
    import transformers

    for seed in seeds:
        model = tiny_model(seed, spec)
        query = model.model.layers[0].self_attn.q_proj.weight
        print(f"transformers {transformers.__version__} torch {torch.__version__} seed {seed} init sha "
              f"{sha(model.state_dict())} std(q0) {query.std():.5f} std(emb) {model.model.embed_tokens.weight.std():.5f}")


def threads(counts: list[int], spec: TinyModelSpec) -> None:
    """One language-modelling gradient of the tiny model (seed 0, a fixed random batch) at each torch thread count."""
    model = tiny_model(0, spec)
    ids = torch.randint(3, spec.vocab_size, (32, 200), generator=torch.Generator().manual_seed(0))
    for count in counts:
        torch.set_num_threads(count)
        model.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
        print(f"threads {torch.get_num_threads()} cpu {torch.backends.cpu.get_cpu_capability()} loss {loss.item()!r} "
              f"grad sha {sha(grads)}")


def warm_start(out: Path, arguments: list[str]) -> None:
    """Run the warm start of a ``validate`` run, write the weights' hash and loss trace to ``out``, then stop."""
    import craft_pl.model.policy as policy_module

    real = policy_module.warm_start_weights

    def hashed(model, rows, settings, key, pad_id, generator):
        started = time.time()
        losses = real(model, rows, settings, key, pad_id, generator)
        record = {"key": key, "weights_sha": sha(dict(model.state_dict())), "threads": torch.get_num_threads(),
                  "cpu": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__, "steps": len(losses),
                  "loss_last": losses[-1] if losses else None, "seconds": round(time.time() - started, 1)}
        out.write_text(json.dumps({**record, "losses": losses}))
        print("warm start", json.dumps(record), flush=True)
        raise SystemExit(0)

    policy_module.warm_start_weights = hashed
    try:
        run_craft_pl(arguments)
    finally:
        policy_module.warm_start_weights = real


def cache(files: list[Path]) -> None:
    """Hash of the weights stored in warm-start cache files (read as tensors and plain values only)."""
    for path in files:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        losses = saved.get("losses") or [None]
        print(f"{path} weights sha {sha(saved['state_dict'])} steps {len(saved.get('losses') or [])} "
              f"loss_last {losses[-1]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("corpus", help="dump the tokenizer corpus of a run")
    command.add_argument("out", type=Path)
    command = commands.add_parser("tokenizer", help="train the built-in tokenizer on a dumped corpus")
    command.add_argument("corpus", type=Path)
    command.add_argument("--vocab_size", type=int, default=TinyModelSpec().vocab_size)
    command = commands.add_parser("init", help="hash the tiny model's random init")
    command.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    command = commands.add_parser("threads", help="gradient bits per torch thread count")
    command.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4, 8])
    command = commands.add_parser("warm-start", help="hash the warm-started weights of a run")
    command.add_argument("out", type=Path)
    command = commands.add_parser("cache", help="hash warm-start cache files")
    command.add_argument("files", type=Path, nargs="+")
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if rest and args.command not in ("corpus", "warm-start"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    spec = TinyModelSpec()
    if args.command == "corpus":
        corpus(args.out, ["validate", *rest])
    elif args.command == "tokenizer":
        tokenizer(args.corpus, args.vocab_size)
    elif args.command == "init":
        init(args.seeds, spec)
    elif args.command == "threads":
        threads(args.threads, spec)
    elif args.command == "warm-start":
        warm_start(args.out, ["validate", *rest])
    else:
        cache(args.files)


if __name__ == "__main__":
    main()
