"""Calls that may never return: run them on a daemon worker thread, wait with a time limit, abandon them on timeout.

``Watchdog.call(function, *args)`` runs ``function(*args)`` on a persistent worker thread and waits for it in short
slices. It returns the call's result or re-raises the call's exception; when the call takes longer than
``timeout_s`` it raises ``CallTimeout`` and abandons the worker (a fresh one serves the next call). Workers are
daemon threads, so a call that never returns never blocks the interpreter's exit (``ThreadPoolExecutor`` threads
are joined at exit, which is why it is not used here).

Between slices the waiting call also checks a process-wide stop request: ``request_stop(exception_type)`` (from a
signal handler, e.g. ``callbacks/interrupt_checkpoint.py`` on Ctrl-C or SIGTERM) makes the waiting call, and every
later one until ``clear_stop()``, raise ``exception_type()`` at once. This module imports nothing of Lightning.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

_STOP = threading.Event()
_STOP_EXCEPTION: list[type[BaseException]] = [KeyboardInterrupt]


def request_stop(exception_type: type[BaseException] = KeyboardInterrupt) -> None:
    """Make every waiting and later ``Watchdog.call`` raise ``exception_type()`` (safe in a signal handler)."""
    _STOP_EXCEPTION[0] = exception_type
    _STOP.set()


def clear_stop() -> None:
    """Forget a stop request (at the start of a run)."""
    _STOP.clear()


def stop_requested() -> bool:
    """Whether a stop was requested and not cleared."""
    return _STOP.is_set()


def _raise_stop() -> None:
    raise _STOP_EXCEPTION[0]()


class CallTimeout(TimeoutError):
    """A call watched by a ``Watchdog`` did not return within its time limit; it was abandoned, still running."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"no answer within {timeout_s:g} s")
        self.timeout_s = timeout_s


class _Worker:
    """One daemon thread that runs the jobs it is given, one at a time, and hands back (ok, result or error)."""

    def __init__(self, name: str) -> None:
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.abandoned = False
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            function, args = job
            try:
                outcome = (True, function(*args))
            except BaseException as error:  # noqa: BLE001 - handed to the waiting thread, which re-raises it
                outcome = (False, error)
            if not self.abandoned:
                self.results.put(outcome)
            del outcome, job, function, args  # drop references before waiting for the next job

    def abandon(self, then: Callable[[], Any] | None = None) -> None:
        """Stop serving calls: the thread finishes its call, runs ``then()`` if given, and ends."""
        self.abandoned = True
        if then is not None:
            self.jobs.put((then, ()))
        self.jobs.put(None)


class Watchdog:
    """Runs calls on a persistent daemon worker thread with a time limit and an interruptible wait."""

    def __init__(self, timeout_s: float, name: str = "craft-watchdog", poll_s: float = 0.05) -> None:
        """
        Args:
            timeout_s: Most seconds a call may take (0 = no limit; the wait still stops on ``request_stop``).
            name: Name of the worker threads (seen in stack dumps).
            poll_s: Longest slice of waiting between checks of the stop request.
        """
        if not isinstance(timeout_s, (int, float)) or not timeout_s >= 0:
            raise ValueError(f"Watchdog: timeout_s={timeout_s!r} is invalid; use seconds >= 0 (0 = no limit)")
        if not isinstance(poll_s, (int, float)) or not poll_s > 0:
            raise ValueError(f"Watchdog: poll_s={poll_s!r} is invalid; use seconds > 0")
        self.timeout_s = float(timeout_s)
        self.name = name
        self.poll_s = float(poll_s)
        self._worker: _Worker | None = None

    def call(self, function: Callable[..., Any], *args: Any, on_abandon: Callable[[], Any] | None = None) -> Any:
        """``function(*args)`` on the worker: its result, or its exception re-raised here; ``CallTimeout`` after
        ``timeout_s``; the requested stop exception as soon as a stop is requested. A call given up on keeps its
        thread, which runs ``on_abandon()`` (e.g. closing a hung environment) if the call ever returns."""
        if _STOP.is_set():
            _raise_stop()
        worker = self._worker
        if worker is None:
            worker = self._worker = _Worker(self.name)
        worker.jobs.put((function, args))
        try:
            ok, value = self._wait(worker)
        except BaseException:  # timeout, stop request, or a signal handler's exception: the call is given up on
            self._abandon(worker, on_abandon)
            raise
        if ok:
            return value
        try:
            raise value
        finally:
            del value  # no reference cycle through the traceback

    def _wait(self, worker: _Worker) -> tuple[bool, Any]:
        deadline = time.monotonic() + self.timeout_s if self.timeout_s > 0 else None
        wait = self.poll_s if deadline is None else min(self.poll_s, self.timeout_s)
        while True:
            try:
                return worker.results.get(timeout=wait)
            except queue.Empty:
                pass
            if _STOP.is_set():
                _raise_stop()
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CallTimeout(self.timeout_s)
                wait = min(self.poll_s, left)

    def _abandon(self, worker: _Worker, then: Callable[[], Any] | None = None) -> None:
        worker.abandon(then)
        if self._worker is worker:
            self._worker = None

    def close(self) -> None:
        """End the idle worker (a later ``call`` starts a new one)."""
        if self._worker is not None:
            self._abandon(self._worker)
