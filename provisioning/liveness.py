"""The background loops of this process, and whether each still goes round: its heartbeat.

A loop (the job worker, the scheduler it leads, the outbox delivery worker,
the Okta inbox processor) beats on every pass, and a loop that waits never
waits longer than its interval, so a live loop beats at least that often. It
is registered from its start until it is closed (stopped on purpose), and
judged meanwhile:

- *stopped*: its thread ended while still registered, because an exception
  escaped it (logged, with its traceback) or because it returned on its own;
- *stalled*: it has not beaten for its ``stall_after`` seconds.

``/readyz`` answers 503 naming every loop at fault; ``/metrics`` shows each
one's last beat. Loops belong to the process that started them: a forked child
(a gunicorn worker) starts with none, and a process without loops has none at fault.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

_registered: dict[int, Loop] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Status:
    """How a loop is doing: ``alive``, ``stopped`` or ``stalled`` (the last two are faults)."""

    loop: str
    state: str
    silent_seconds: float
    stall_after_seconds: float
    error: str | None = None  # the kind of exception that ended it

    def __str__(self) -> str:
        if self.state == "stopped":
            why = f" ({self.error})" if self.error else " (returned without being stopped)"
            return f"background loop {self.loop} has stopped{why}"
        if self.state == "stalled":
            return (
                f"background loop {self.loop} has not beaten for {self.silent_seconds:.1f} s "
                f"(stalled after {self.stall_after_seconds:g} s)"
            )
        return f"background loop {self.loop} goes round"

    def as_json(self) -> dict[str, object]:
        return {
            "loop": self.loop,
            "state": self.state,
            "silent_seconds": round(self.silent_seconds, 3),
            "stall_after_seconds": self.stall_after_seconds,
            "error": self.error,
        }


class Loop:
    """One background loop's heartbeat; see the module's docstring."""

    def __init__(self, name: str, *, stall_after: float) -> None:
        self.name, self.stall_after = name, stall_after
        self.thread: threading.Thread | None = None
        self.error: str | None = None
        self.beaten = time.monotonic()  # when it last beat, for judging
        self.beaten_at = time.time()  # the same, as a wall-clock time, for /metrics
        self._closed = True

    def beat(self) -> None:
        """Record one pass of the loop."""
        self.beaten, self.beaten_at = time.monotonic(), time.time()

    def register(self) -> Loop:
        """Judge this loop from now on (by its heartbeat alone, when it has no thread)."""
        self.beat()
        self._closed = False
        with _lock:
            _registered[id(self)] = self
        return self

    def start(self, target: Callable[[], None]) -> threading.Thread:
        """Run ``target`` in a daemon thread named for the loop, registered until closed."""
        self.error, self._closed = None, False
        self.thread = threading.Thread(target=self._guard, args=(target,), name=self.name)
        self.thread.daemon = True
        self.thread.start()
        self.register()
        return self.thread

    def _guard(self, target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            self.error = type(exc).__name__
            log.critical("background loop %s died", self.name, exc_info=True)
            return
        if not self._closed:
            log.critical("background loop %s returned without being stopped", self.name)

    def close(self) -> None:
        """Stop judging this loop: it is being stopped on purpose."""
        self._closed = True
        with _lock:
            _registered.pop(id(self), None)

    def status(self, now: float | None = None) -> Status:
        silent = max(0.0, (time.monotonic() if now is None else now) - self.beaten)
        if self.thread is not None and not self.thread.is_alive():
            return Status(self.name, "stopped", silent, self.stall_after, self.error)
        if silent > self.stall_after:
            return Status(self.name, "stalled", silent, self.stall_after)
        return Status(self.name, "alive", silent, self.stall_after)

    def fault(self, now: float | None = None) -> Status | None:
        """What is wrong with the loop, or None while it goes round."""
        status = self.status(now)
        return None if status.state == "alive" else status


def loops() -> list[Loop]:
    """The loops registered in this process, by name."""
    with _lock:
        return sorted(_registered.values(), key=lambda loop: loop.name)


def statuses() -> list[Status]:
    """How every registered loop is doing, by name."""
    now = time.monotonic()
    return [loop.status(now) for loop in loops()]


def faults() -> list[Status]:
    """Every registered loop that stopped or stalled, by name."""
    return [status for status in statuses() if status.state != "alive"]


def _forget_after_fork() -> None:
    # A forked child runs none of its parent's threads (and none holds the lock there).
    global _lock
    _lock = threading.Lock()
    _registered.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
