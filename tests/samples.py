"""Sample payloads as the edge sends them (p1wire field names)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from p1common.samples import REGISTER_EPOCH, sample

__all__ = ["BASE_TS", "REGISTER_EPOCH", "meter_swap", "sample", "series"]

BASE_TS = datetime(2026, 3, 1, tzinfo=UTC)


def series(count: int, start: datetime = BASE_TS, step_s: float = 1.0) -> list[dict[str, Any]]:
    return [sample(start + timedelta(seconds=i * step_s)) for i in range(count)]


def meter_swap(count: int = 6) -> list[dict[str, Any]]:
    """``count`` readings 10 s apart at about 10,000 kWh, then, five minutes after the
    first, a new meter that starts at 0.5 kWh and has no export registers."""
    old = [sample(BASE_TS + timedelta(seconds=10 * i)) for i in range(count)]
    new = [
        sample(
            BASE_TS + timedelta(minutes=5, seconds=10 * i),
            energy_import_kwh=0.5 + i / 3600,
            energy_export_kwh=None,
        )
        for i in range(count)
    ]
    return old + new
