"""The time grid every layer shares: quarters, hours, local midnights, the years the API
answers for, and the register value at a boundary.

Pure functions, no database and no clock. They live below capacity so that telemetry
(series, rollups) and capacity (the tariff rules) use one definition: Belgian offsets are
whole hours, so UTC-aligned quarters and hours are the local ones.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

QUARTER = timedelta(minutes=15)
QUARTER_S = 900.0
HOUR = timedelta(hours=1)
# The years the read API answers for: samples start in 2000 (telemetry.validation), and
# far-off years reach local-mean-time offsets and date overflows instead of answers.
FIRST_YEAR, LAST_YEAR = 2000, 2099
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def bucket_start(ts: datetime, width: timedelta) -> datetime:
    """Start of the UTC-aligned bucket holding ts (Belgian offsets are whole hours)."""
    return ts - (ts - _EPOCH) % width


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def day_bounds(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    return local_midnight(day, tz), local_midnight(day + timedelta(days=1), tz)


def interpolate(
    boundary: datetime, before: tuple[datetime, float] | None, after: tuple[datetime, float]
) -> float:
    """Register value at a boundary, linear between the nearest samples either side."""
    if before is None:
        return after[1]  # no earlier sample: never extrapolate
    (t1, v1), (t2, v2) = before, after
    return v1 + (v2 - v1) * ((boundary - t1) / (t2 - t1))
