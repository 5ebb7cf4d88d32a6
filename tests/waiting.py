"""Awaiting a condition another process brings about: the suite's one polling helper."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

EVENT_TIMEOUT_S = 30.0
POLL_EVERY_S = 0.02


def wait_until(predicate: Callable[[], T], timeout_s: float = EVENT_TIMEOUT_S, what: str = "") -> T:
    """The predicate's first truthy value, checked every 20 ms until the deadline.

    For states only observable by asking (a row in the database, an answer from a
    server); where an event can be awaited directly (a log line, a threading.Event),
    await that instead.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what or predicate}")
        time.sleep(POLL_EVERY_S)


def process_gone(pid: int) -> bool:
    """No such process, or only its zombie: an orphan's zombie lingers until whoever
    adopted it reaps it, which a container's first process may never do."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
