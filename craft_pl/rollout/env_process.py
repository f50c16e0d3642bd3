"""Environments in worker processes (``data.env_workers: process``): a step stuck anywhere can be stopped.

A thread cannot be killed. In-process (``thread``, the default) an environment call that overruns
``env_step_timeout_s`` is abandoned on its watchdog thread: a pure-Python loop keeps spinning there, and a call stuck
in C code that holds the GIL (a runaway regex) stops the whole process, watchdog included, until it returns. In a
worker process the same call is killed (SIGKILL) when it overruns, whatever it holds, and a fresh worker replaces it.

``ProcessEnv`` is the proxy the collector sees: every method call and attribute read crosses a pipe to the worker,
which holds the real environment (built there by the environment factory). Arguments and results are pickled
(tasks, observations, ``StepResult``, ``PromptParts``). One worker per pooled environment; on Linux workers are
forked (cheap, copy-on-write; the factory need not be picklable), elsewhere spawned. Cost per call: one pipe round
trip (``benchmarks/results/env_workers.md``).
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import sys
import threading
from typing import Any, Callable

_READY_TIMEOUT_S = 120.0


class EnvironmentProcessDied(RuntimeError):
    """The worker process of an environment ended (killed after a timeout, or crashed) while it was being asked."""


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a ``RuntimeError`` with its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any unpicklable exception is described instead
        return RuntimeError(f"{type(error).__name__}: {error}")


def _serve(factory: Callable[[], Any], connection) -> None:
    """The worker: build the environment, then answer ``(op, name, args, kwargs)`` requests until told to exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends workers itself
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        env = factory()
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        connection.send((False, _portable(error)))
        return
    connection.send((True, None))
    while True:
        try:
            op, name, args, kwargs = connection.recv()
        except (EOFError, OSError):
            return
        if op == "exit":
            return
        try:
            attribute = getattr(env, name)
            if op == "kind":
                result = "method" if callable(attribute) else "value"
            elif op == "get":
                result = attribute
            else:
                result = attribute(*args, **kwargs)
            outcome = (True, result)
        except BaseException as error:  # noqa: BLE001 - re-raised in the parent
            outcome = (False, _portable(error))
        try:
            connection.send(outcome)
        except Exception as error:  # noqa: BLE001 - an unpicklable result
            connection.send((False, RuntimeError(f"environment {op} {name}: the result cannot be sent to the "
                                                 f"trainer process ({type(error).__name__}: {error})")))


def _context():
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


class ProcessEnv:
    """An environment that lives in its own worker process (see the module docstring)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        context = _context()
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(factory, child), name="craft-env-worker", daemon=True)
        self._process.start()
        child.close()
        self._lock = threading.Lock()
        self._kinds: dict[str, str] = {}
        if not self._connection.poll(_READY_TIMEOUT_S):
            self.kill()
            raise EnvironmentProcessDied(f"an environment worker did not start within {_READY_TIMEOUT_S:g} s")
        self._answer(self._receive())

    def _receive(self) -> tuple[bool, Any]:
        try:
            return self._connection.recv()
        except (EOFError, OSError) as error:
            raise EnvironmentProcessDied(f"the environment worker (pid {self._process.pid}) ended "
                                         f"(exit code {self._process.exitcode})") from error

    @staticmethod
    def _answer(outcome: tuple[bool, Any]) -> Any:
        ok, payload = outcome
        if ok:
            return payload
        raise payload

    def _request(self, op: str, name: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            try:
                self._connection.send((op, name, args, kwargs))
            except (OSError, ValueError) as error:
                raise EnvironmentProcessDied(f"the environment worker (pid {self._process.pid}) is gone") from error
            return self._answer(self._receive())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        kind = self._kinds.get(name)
        if kind is None:
            kind = self._kinds[name] = self._request("kind", name)
        if kind == "method":
            def method(*args: Any, **kwargs: Any) -> Any:
                return self._request("call", name, *args, **kwargs)

            method.__name__ = name
            return method
        return self._request("get", name)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def alive(self) -> bool:
        return self._process.is_alive()

    def kill(self) -> None:
        """End the worker now (SIGKILL): whatever its call holds, it stops; a waiting request raises."""
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=5)
        self._connection.close()

    def close(self) -> None:
        """Close the environment in its worker, then end the worker (killed if it does not answer in 5 s)."""
        if not self._process.is_alive():
            self.kill()
            return
        acquired = self._lock.acquire(timeout=5)  # a hung call holds it: then the worker is killed
        try:
            if acquired:
                self._connection.send(("call", "close", (), {}))
                if self._connection.poll(5):
                    self._connection.recv()
                self._connection.send(("exit", "", (), {}))
                self._process.join(timeout=5)
        except (OSError, EOFError, ValueError):
            pass
        finally:
            if acquired:
                self._lock.release()
            self.kill()

    def __del__(self) -> None:
        process = getattr(self, "_process", None)
        if process is not None and process.is_alive():
            try:
                process.kill()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass


def process_env_factory(factory: Callable[[], Any]) -> Callable[[], ProcessEnv]:
    """A factory of ``ProcessEnv`` workers, each building its environment with ``factory``."""

    def build() -> ProcessEnv:
        return ProcessEnv(factory)

    return build
