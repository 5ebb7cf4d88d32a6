"""The series buckets as telemetry.series computed them before issue 17, in Python over
ORM rows (the boundaries from today's period_starts): the reference the SQL is compared
with (tests/test_series_sql.py).

History buckets for GET /v1/series, from the rollup relations.

15m and 1h read their own relation; days, weeks (from Monday) and months are built from
hours at query time in the device's time zone (local midnight is always a whole UTC
hour in Belgium). Energy per bucket is the import/export register delta between the
bucket's boundaries, each interpolated between the nearest samples around it, so the
buckets of a range add up to the register change over the range. Registers are read
across register segments (telemetry.segments): a meter swap adds no energy. Export is
null where a boundary has no export register (a meter without one).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, overload
from zoneinfo import ZoneInfo

from telemetry.models import HourRollup, QuarterRollup, Rollup
from telemetry.segments import Offsets
from telemetry.series import period_starts
from telemetry.storage.rollups import ROLLUP_COLUMNS
from telemetry.timegrid import interpolate

INTERVALS = ("15m", "1h", "1d", "1w", "1mo")
MAX_POINTS = 10_000
# bucket .. max_power_w: the rollup columns a series bucket needs, in _Row's order.
_FIELDS = ROLLUP_COLUMNS[1:12]


class SeriesRangeError(ValueError):
    pass


@dataclass(frozen=True)
class _Row:
    bucket: datetime
    first_ts: datetime
    last_ts: datetime
    first_import: float
    last_import: float
    first_export: float | None
    last_export: float | None
    count: int
    power_sum: float
    min_power: float
    max_power: float


def series(
    device_pk: int, interval: str, start: datetime, end: datetime, tz: ZoneInfo
) -> list[dict]:
    boundaries = period_starts(interval, start, end, tz)
    model: type[Rollup] = QuarterRollup if interval == "15m" else HourRollup
    rows = _rows(model, device_pk, boundaries[0], boundaries[-1])
    bucket_starts = [r.bucket for r in rows]
    out = []
    for lo, hi in itertools.pairwise(boundaries):
        i, j = bisect.bisect_left(bucket_starts, lo), bisect.bisect_left(bucket_starts, hi)
        inside = rows[i:j]
        if not inside:
            continue
        count = sum(r.count for r in inside)
        exported = _delta(rows, bucket_starts, lo, hi, "export")
        out.append(
            {
                "start": lo.astimezone(tz).isoformat(),
                "import_kwh": round(_delta(rows, bucket_starts, lo, hi, "import"), 6),
                "export_kwh": None if exported is None else round(exported, 6),
                "avg_power_w": round(sum(r.power_sum for r in inside) / count, 1),
                "min_power_w": min(r.min_power for r in inside),
                "max_power_w": max(r.max_power for r in inside),
                "sample_count": count,
            }
        )
    return out


def _rows(model: type[Rollup], device_pk: int, start: datetime, end: datetime) -> list[_Row]:
    """Rollup rows in [start, end) plus the nearest non-empty row on either side."""
    # Rollup is abstract (its type has no `objects`): the manager Django gives code
    # written over several models.
    base = model._default_manager.filter(device_id=device_pk)
    before = base.filter(bucket__lt=start).order_by("-bucket").values_list(*_FIELDS)[:1]
    after = base.filter(bucket__gte=end).order_by("bucket").values_list(*_FIELDS)[:1]
    within = base.filter(bucket__gte=start, bucket__lt=end).order_by("bucket")
    rows = [*before, *within.values_list(*_FIELDS), *after]
    offsets = Offsets.of_device(device_pk)
    return [_continuous(_Row(*row), offsets) for row in rows]


def _continuous(row: _Row, offsets: Offsets) -> _Row:
    """The row's register values with the steps of earlier register breaks taken out."""
    if not offsets.starts:
        return row
    return dataclasses.replace(
        row,
        first_import=offsets.import_at(row.first_ts, row.first_import),
        last_import=offsets.import_at(row.last_ts, row.last_import),
        first_export=offsets.export_at(row.first_ts, row.first_export),
        last_export=offsets.export_at(row.last_ts, row.last_export),
    )


def _register(
    rows: list[_Row], starts: list[datetime], boundary: datetime, which: str
) -> float | None:
    """The register at a boundary; None when a sample it needs has no such register."""
    i = bisect.bisect_left(starts, boundary)
    first, last = f"first_{which}", f"last_{which}"
    if i == len(rows):
        return getattr(rows[-1], last)  # nothing after the boundary yet
    after = (rows[i].first_ts, getattr(rows[i], first))
    before = (rows[i - 1].last_ts, getattr(rows[i - 1], last)) if i > 0 else None
    if after[1] is None:
        return None
    if before is not None and before[1] is None:
        return None
    return interpolate(boundary, before, after)


# Import registers are never None (_Row); export ones are where a meter has none.
@overload
def _delta(
    rows: list[_Row], starts: list[datetime], lo: datetime, hi: datetime, which: Literal["import"]
) -> float: ...
@overload
def _delta(
    rows: list[_Row], starts: list[datetime], lo: datetime, hi: datetime, which: Literal["export"]
) -> float | None: ...
def _delta(
    rows: list[_Row], starts: list[datetime], lo: datetime, hi: datetime, which: str
) -> float | None:
    end, start = _register(rows, starts, hi, which), _register(rows, starts, lo, which)
    if end is None or start is None:
        return None
    return max(end - start, 0.0)
