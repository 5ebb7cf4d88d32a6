"""How the ingest-steps worker spreads a cycle's chunks over its interval.

Run back to back, a cycle's chunks take a core (the worker's Python and its PostgreSQL
backend's) from the live path for as long as the cycle lasts: on a small box every
request of those seconds waits (docs/PERFORMANCE.md, "Eleventh session"). Paced, the
worker rests after each chunk in proportion to the chunk's own time, as PostgreSQL's
autovacuum does with its cost delay, so the live path keeps most of the machine all the
time. It rests only while the chunks left would still end, unpaced, before the cycle's
deadline: pacing makes a cycle longer, never lets owed work pile up beyond it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# A paced cycle ends within this share of the interval (its work permitting): capacity
# answers are then late by at most the interval and this share of it.
DEADLINE_SHARE = 0.5
# Shorter rests are not worth a wait.
MIN_REST_S = 0.001


@dataclass
class Pace:
    """``duty``: the share of a cycle's wall time spent working, in (0, 1]; 1 rests
    never. ``deadline``: the ``clock()`` reading by which the cycle should end.
    ``rest`` waits (the worker's stop event's wait, so a signal cuts a rest short);
    ``rested_s`` sums the rests taken."""

    duty: float
    deadline: float
    clock: Callable[[], float] = time.monotonic
    rest: Callable[[float], object] = time.sleep
    rested_s: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.duty <= 1:
            raise ValueError(f"duty must be in (0, 1], got {self.duty!r}")

    @classmethod
    def for_cycle(
        cls,
        duty: float,
        began: float,
        interval_s: float,
        rest: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> Pace:
        return cls(duty, began + interval_s * DEADLINE_SHARE, clock, rest)

    def after_chunk(self, took_s: float, chunks_left: int) -> float:
        """Rest after a chunk that worked ``took_s``: ``took_s`` x (1 / duty - 1), cut
        to what leaves the ``chunks_left`` (each assumed to take as long) time to end
        by the deadline unpaced. Returns the rest taken, in seconds."""
        if self.duty >= 1 or chunks_left <= 0 or took_s <= 0:
            return 0.0
        wanted = took_s * (1 / self.duty - 1)
        room = self.deadline - self.clock() - took_s * chunks_left
        pause = min(wanted, room)
        if pause < MIN_REST_S:
            return 0.0
        self.rest(pause)
        self.rested_s += pause
        return pause
