"""What every hostile test asks of an answer and of the database."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx

PROBLEM = "application/problem+json"
T = TypeVar("T")


def assert_problem(response: httpx.Response, status: int) -> dict:
    """A problem+json answer (RFC 9457) with this status; returns its body."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    return body


def stored_rows() -> dict[str, int]:
    """Rows of every table an ingest writes: samples, rollups and derived capacity."""
    from capacity.models import CapacityMonth, CapacityQuarter
    from telemetry.models import HourRollup, QuarterRollup, Sample

    return {
        model.__name__: model.objects.count()
        for model in (Sample, QuarterRollup, HourRollup, CapacityQuarter, CapacityMonth)
    }


def await_true(probe: Callable[[], T], timeout_s: float = 30.0, every_s: float = 0.1) -> T:
    """``probe()`` once it returns something true; fails naming the last value after
    ``timeout_s``. For states another process reaches in its own time (a reconnect)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout_s} s; last: {value!r}")
        time.sleep(every_s)
