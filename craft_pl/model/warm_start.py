"""Warm start: behaviour cloning on expert demonstrations before RL, cached on disk by its settings.

The cloned weights become the *base* of the policy: the reference policy is the warm-started model, never the
random init. The warm start draws from its own generator, so a cached and an uncached run continue bit-identically.

Behaviour cloning survives interruption: every ``SAVE_EVERY_S`` seconds, and when SIGINT or SIGTERM arrives, it
saves its progress (weights, optimizer, generator, the pass's remaining batches, the losses) next to the cache entry
(``<key>.partial.pt``, same key: a function of the settings) and says where in one line; the next run with the same
settings continues from there to the same weights, bit for bit. Progress shows wherever output goes: a bar on a
terminal, a plain line every ``PROGRESS_EVERY_S`` seconds otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from craft_pl.storage.atomic import WriteError, atomic_torch_save
from craft_pl.checkpointing import digest_differences, error_summary, tree_digests
from craft_pl.distributed import world
from craft_pl.model.logprobs import pad_pairs, response_logprobs

log = logging.getLogger(__name__)

SAVE_EVERY_S = 60.0
"""Seconds between saves of behaviour cloning's progress (and on SIGINT / SIGTERM)."""
PROGRESS_EVERY_S = 30.0
"""Seconds between the plain progress lines written when the output is not a terminal."""


@dataclass(frozen=True)
class WarmStart:
    """Behaviour cloning of the expert before RL (the tiny built-in model needs it to emit valid actions)."""

    num_demos: int = 2000
    """Expert episodes to clone (from the train split, seeded separately from RL and validation)."""
    steps: int = 600
    """Optimizer steps of behaviour cloning."""
    batch_size: int = 32
    """Rows (turns) per behaviour-cloning step."""
    lr: float = 1e-3
    """AdamW learning rate of behaviour cloning."""
    student_episodes: int = 0
    """DAgger: after cloning, the cloned student plays this many train tasks, the expert labels every state it
    reaches (its invalid-command cascades and detours included), and cloning goes on over both sets of rows
    (0 = off; ``craft_pl.model.dagger``)."""
    student_steps: int = 1000
    """Optimizer steps of the cloning after the student's episodes (with ``student_episodes`` > 0)."""
    student_temperature: float = 1.0
    """Sampling temperature of the student while it plays those episodes."""
    cache: bool = True
    """Reuse a previous warm start with identical settings, model, tokenizer and demonstrations."""
    cache_dir: str | None = None
    """Where cached warm starts live (default ``$CRAFT_PL_CACHE`` or ``~/.cache/craft_pl``)."""

    def __post_init__(self) -> None:
        for name in ("num_demos", "steps", "batch_size", "student_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"warm_start.{name} must be >= 1, got {getattr(self, name)}")
        if self.student_episodes < 0:
            raise ValueError(f"warm_start.student_episodes must be >= 0 (0 = no student episodes), got "
                             f"{self.student_episodes}")
        if not self.student_temperature > 0:
            raise ValueError(f"warm_start.student_temperature must be > 0, got {self.student_temperature}")
        if not self.lr > 0:
            raise ValueError(f"warm_start.lr must be > 0, got {self.lr}")


def cache_directory(settings: WarmStart) -> Path:
    root = settings.cache_dir or os.environ.get("CRAFT_PL_CACHE") or Path.home() / ".cache" / "craft_pl"
    return Path(root) / "warm_start"


STUDENT_FIELDS = ("student_episodes", "student_steps", "student_temperature")
"""The DAgger stage's settings: not part of the first cloning's key (its weights do not depend on them); the second
stage's key is over all rows, with these settings carried in ``model_description``."""


def cache_key(settings: WarmStart, model_description: str, vocab: dict[str, int], rows: list[tuple[list[int], list[int]]], seed: int) -> str:
    """A digest of everything that determines the warm-started weights."""
    digest = hashlib.sha256()
    learn = {k: v for k, v in asdict(settings).items() if k not in ("cache", "cache_dir") + STUDENT_FIELDS}
    digest.update(json.dumps({"settings": learn, "model": model_description, "seed": seed}, sort_keys=True).encode())
    digest.update(json.dumps(sorted(vocab.items())).encode())
    for prompt, response in rows:
        digest.update(b"%d:%d|" % (len(prompt), len(response)))
        digest.update(torch.tensor(prompt + response, dtype=torch.int64).numpy().tobytes())
    return digest.hexdigest()[:24]


def length_grouped_batches(lengths: list[int], batch_size: int, generator: torch.Generator, group: int = 8) -> list[list[int]]:
    """One pass over the rows in batches of similar length (less padding), in a seeded random order.

    Rows are shuffled, cut into chunks of ``group x batch_size``, sorted by length inside each chunk, split into
    batches, and the batches shuffled.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    batches = []
    chunk_size = batch_size * group
    for start in range(0, len(order), chunk_size):
        chunk = sorted(order[start : start + chunk_size], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def behaviour_clone(
    model: torch.nn.Module,
    rows: list[tuple[list[int], list[int]]],
    settings: WarmStart,
    pad_id: int,
    generator: torch.Generator,
    progress_path: Path | None = None,
    stop: list[str] | None = None,
) -> list[float]:
    """Minimise the mean response-token NLL of ``rows`` (prompt ids, response ids); returns the loss per step.

    With ``progress_path`` the progress is saved there every ``SAVE_EVERY_S`` seconds, and a progress file found
    there is continued. ``stop`` (filled by ``stop_signals``) is checked after each step: a signal name there saves
    the progress and raises ``KeyboardInterrupt`` (SIGINT) or Lightning's ``SIGTERMException`` (SIGTERM).
    """
    stop = [] if stop is None else stop
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr, weight_decay=0.0)
    model.train()
    lengths = [len(prompt) + len(response) for prompt, response in rows]
    losses: list[float] = []
    batches: list[list[int]] = []
    if progress_path is not None and progress_path.exists():
        losses, batches = resume_progress(progress_path, model, optimizer, generator)
    # a bar on a terminal (tqdm's disable=None: none when output goes to a file); plain lines otherwise
    bar = tqdm(total=settings.steps, initial=len(losses), desc="warm start", unit="step", leave=False,
               disable=None if show_progress() else True)
    lines = show_progress() and not sys.stderr.isatty()
    started = last_line = last_save = time.perf_counter()
    first = len(losses)
    while len(losses) < settings.steps:
        if not batches:
            batches = length_grouped_batches(lengths, settings.batch_size, generator)
        index = batches.pop()
        batch = pad_pairs([rows[i][0] for i in index], [rows[i][1] for i in index], pad_id)
        logp, _ = response_logprobs(model, batch)
        loss = -(logp.sum() / batch.response_mask.sum())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
        bar.update()
        now = time.perf_counter()
        if lines and now - last_line >= PROGRESS_EVERY_S:
            last_line = now
            left = (now - started) / (len(losses) - first) * (settings.steps - len(losses))
            print(f"warm start: step {len(losses)}/{settings.steps}, loss {losses[-1]:.3f}, about {left / 60:.0f} "
                  "min left", flush=True)
        done = len(losses) == settings.steps
        if progress_path is not None and not done and (stop or now - last_save >= SAVE_EVERY_S):
            last_save = now
            save_progress(progress_path, model, optimizer, generator, losses, batches)
        if stop and not done:
            bar.close()
            where = f"progress saved to {progress_path}; the next run with the same settings continues from " \
                    "there" if progress_path is not None else "nothing saved (warm_start.cache is false)"
            announce(f"warm start: stopped by {stop[0]} at step {len(losses)}/{settings.steps}; {where}")
            if stop[0] == "SIGTERM":
                from lightning.pytorch.utilities.exceptions import SIGTERMException

                raise SIGTERMException
            raise KeyboardInterrupt
    bar.close()
    return losses


@contextmanager
def stop_signals():
    """Inside, SIGINT and SIGTERM only append their name to the yielded list (checked after each step); the
    previous handlers come back on exit. Outside the main thread nothing changes."""
    received: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    for number in previous:
        signal.signal(number, lambda signum, frame: received.append(signal.Signals(signum).name))
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


def save_progress(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
                  losses: list[float], batches: list[list[int]]) -> None:
    """Behaviour cloning's state after ``len(losses)`` steps, written whole (a failed write warns, cloning goes on)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
             "losses": list(losses), "batches": [list(b) for b in batches]}
    try:
        atomic_torch_save(state, path)
    except WriteError as error:
        log.warning("warm start: progress not saved, cloning goes on: %s", error)


def resume_progress(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator) -> tuple[list[float], list[list[int]]]:
    """Load the progress saved at ``path`` into ``model``, ``optimizer`` and ``generator``; returns the losses so far
    and the pass's remaining batches (nothing loaded, a warning naming the file, when it cannot be used)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
        if {name: tuple(value.shape) for name, value in state["model"].items()} != shapes:
            raise ValueError("its weights do not fit this model")
        losses, batches = list(state["losses"]), [list(b) for b in state["batches"]]
        optimizer.load_state_dict(state["optimizer"])  # checked against the parameter groups before the model
        model.load_state_dict(state["model"])
        generator.set_state(state["generator"])
    except Exception as error:  # damaged, or from another model: start from step 0
        log.warning("warm start: cannot continue from %s (%s); starting from step 0", path, error_summary(error))
        return [], []
    announce(f"warm start: continuing from step {len(losses)} saved in {path}")
    return losses, batches


def show_progress() -> bool:
    """Progress output only on the first process (the others wait for its cache)."""
    return world()[0] == 0


def announce(line: str) -> None:
    """One line in the run's output (first process only): what the warm start does and where its cache is."""
    if show_progress():
        print(line, flush=True)


class WarmStartNotCached(ValueError):
    """Under ``cache_only`` the warm start is not in the cache (or does not verify); the message names the file."""


_cache_only: list[bool] = []


@contextmanager
def cache_only(recompute: bool = False):
    """Inside, a warm start only loads from the cache: a missing one raises ``WarmStartNotCached`` (``export`` never
    trains). With ``recompute`` it is computed, but never written (a stored configuration chooses no folder)."""
    _cache_only.append(recompute)
    try:
        yield
    finally:
        _cache_only.pop()


def warm_start_weights(model: torch.nn.Module, rows: list[tuple[list[int], list[int]]], settings: WarmStart,
                       key: str, pad_id: int, generator: torch.Generator) -> list[float]:
    """Behaviour-clone ``model`` in place on ``rows``, or load the cached result stored under ``key``; returns the
    behaviour-cloning loss per step. A fresh result is cached (written whole, then renamed into place; a failed write warns and training goes on) with a digest
    of its weights; a cache that cannot be read or does not match its digest is discarded with a warning and
    recomputed (bit-identically: the warm start is a pure function of its settings and seed)."""
    path = cache_directory(settings) / f"{key}.pt"
    if settings.cache and path.exists():
        losses = load_cached_weights(model, path)
        if losses is not None:
            model.eval()
            announce(f"warm start: loaded from cache {path}")
            return losses
    if _cache_only and not _cache_only[-1]:
        raise WarmStartNotCached(
            f"the warm start this checkpoint's base needs is not in the cache ({path}), and export never trains: "
            "export on the machine and install that trained it (the cache is keyed by torch version and CPU), or "
            f"pass --recompute_warm_start to recompute it ({settings.steps} behaviour-cloning steps, not cached)")
    if _cache_only:
        settings = replace(settings, cache=False)
    announce(f"warm start: behaviour cloning on {len(rows)} rows for {settings.steps} steps"
             + (f" (cached afterwards in {path})" if settings.cache else " (not cached: warm_start.cache is false)"))
    started = time.perf_counter()
    progress = path.with_suffix(".partial.pt") if settings.cache and show_progress() else None  # the first process
    with stop_signals() as stop:
        losses = behaviour_clone(model, rows, settings, pad_id, generator, progress, stop)
        model.eval()
        announce(f"warm start: done in {time.perf_counter() - started:.0f} s, final loss {losses[-1]:.3f}")
        _cache(model, losses, path, settings, progress)
    if stop:  # arrived during the last step: the result is cached, the signal goes to the handler it was meant for
        signal.raise_signal(getattr(signal, stop[0]))
    return losses


def _cache(model: torch.nn.Module, losses: list[float], path: Path, settings: WarmStart, progress: Path | None) -> None:
    """Store the warm start under ``path`` (when caching) and remove its progress file."""
    if settings.cache:
        content = {"state_dict": model.state_dict(), "losses": losses}
        try:  # concurrent runs with the same settings each write their own temporary file
            atomic_torch_save({**content, "digest": tree_digests(content)}, path)
        except WriteError as error:  # the warm start is computed: a cache that cannot be written costs only time
            log.warning("warm start: not cached, training goes on: %s", error)
    if progress is not None:
        progress.unlink(missing_ok=True)


def load_cached_weights(model: torch.nn.Module, path: Path) -> list[float] | None:
    """Load the cached warm start at ``path`` into ``model`` and return its losses; None (``model`` untouched, a
    warning naming the file) when it cannot be read, has no digest, does not match it or does not fit ``model``."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        content = {"state_dict": dict(saved["state_dict"]), "losses": list(saved["losses"])}
        stored = saved.get("digest")
    except Exception as error:  # truncated or damaged file (torch's message names no file)
        problem = f"it cannot be read, it is truncated or damaged ({error_summary(error)})"
    else:
        shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
        if not isinstance(stored, dict):
            problem = "it has no digest (written by an older craft_pl)"
        elif differences := digest_differences(stored, tree_digests(content)):
            problem = f"it does not match its digest ({differences})"
        elif {name: tuple(getattr(value, "shape", ())) for name, value in content["state_dict"].items()} != shapes:
            problem = "its weights do not fit this model"
        else:
            model.load_state_dict(content["state_dict"])
            return content["losses"]
    log.warning("warm start: discarding the cached weights %s: %s; recomputing them (same settings and seed give the "
                "same weights)", path, problem)
    return None
