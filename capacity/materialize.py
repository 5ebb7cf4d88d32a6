"""Keeping capacity_quarter and capacity_month current as samples arrive.

A batch changes the quarters it lands in and, through boundary interpolation, the
nearest non-empty quarter on either side. Those are recomputed from the 15-minute
rollup with the same SQL the rules are tested against, and upserted; then the peak
and counts of every local month those quarters fall in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from django.db import connection

from capacity.queries import param, quarters_sql
from capacity.rules import COMPLETE_COVERAGE, QUARTER, Month
from telemetry.models import Device
from telemetry.rollups import bucket_start

_UPSERT = """
INSERT INTO capacity_quarter
    (device_id, bucket, kw, coverage, sample_count, first_ts, last_ts)
SELECT %(device)s, bucket, CASE WHEN kw < 0 THEN 0 ELSE kw END,
    CASE WHEN coverage > 1 THEN 1 ELSE coverage END, sample_count, first_ts, last_ts
FROM quarters WHERE true
ON CONFLICT (device_id, bucket) DO UPDATE SET
    kw = excluded.kw, coverage = excluded.coverage, sample_count = excluded.sample_count,
    first_ts = excluded.first_ts, last_ts = excluded.last_ts
"""

_NEIGHBOURS = """
SELECT
    (SELECT max(bucket) FROM telemetry_quarter WHERE device_id = %(device)s AND bucket < %(lo)s),
    (SELECT min(bucket) FROM telemetry_quarter WHERE device_id = %(device)s AND bucket > %(hi)s)
"""

_MONTH_UPSERT = f"""
INSERT INTO capacity_month (device_id, month_start, month_end, peak_kw, peak_bucket,
    quarters_with_data, quarters_complete)
SELECT %(device)s, %(start)s, %(end)s, kw, bucket,
    (SELECT count(*) FROM capacity_quarter
     WHERE device_id = %(device)s AND bucket >= %(start)s AND bucket < %(end)s),
    (SELECT count(*) FROM capacity_quarter
     WHERE device_id = %(device)s AND bucket >= %(start)s AND bucket < %(end)s
       AND coverage >= {COMPLETE_COVERAGE})
FROM capacity_quarter
WHERE device_id = %(device)s AND bucket >= %(start)s AND bucket < %(end)s
ORDER BY kw DESC, bucket LIMIT 1
ON CONFLICT (device_id, month_start) DO UPDATE SET
    month_end = excluded.month_end, peak_kw = excluded.peak_kw,
    peak_bucket = excluded.peak_bucket, quarters_with_data = excluded.quarters_with_data,
    quarters_complete = excluded.quarters_complete
"""


def refresh_quarters(device_pk: int, oldest: datetime, newest: datetime) -> None:
    """Recompute the quarters holding [oldest, newest], their non-empty neighbours, and
    the months those quarters are in."""
    lo, hi = bucket_start(oldest, QUARTER), bucket_start(newest, QUARTER)
    with connection.cursor() as cursor:
        cursor.execute(_NEIGHBOURS, {"device": device_pk, "lo": param(lo), "hi": param(hi)})
        before, after = cursor.fetchone()
    first = _as_datetime(before) if before is not None else lo
    last = _as_datetime(after) if after is not None else hi
    _recompute(device_pk, first, last)


def rebuild(device_pk: int) -> None:
    """Recompute every quarter and month of a device (after a bulk load that bypassed
    ingest, or a change of the device's time zone)."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM capacity_quarter WHERE device_id = %s", [device_pk])
        cursor.execute("DELETE FROM capacity_month WHERE device_id = %s", [device_pk])
        cursor.execute(
            "SELECT min(bucket), max(bucket) FROM telemetry_quarter WHERE device_id = %s",
            [device_pk],
        )
        first, last = cursor.fetchone()
    if first is not None:
        _recompute(device_pk, _as_datetime(first), _as_datetime(last))


def _recompute(device_pk: int, first: datetime, last: datetime) -> None:
    """Quarters from first to last (bucket starts) and every local month they touch."""
    with connection.cursor() as cursor:
        cursor.execute(
            quarters_sql() + _UPSERT,
            {"device": device_pk, "start": param(first), "end": param(last + QUARTER)},
        )
        tz = ZoneInfo(Device.objects.values_list("timezone", flat=True).get(pk=device_pk))
        month, last_month = Month.of(first, tz), Month.of(last, tz)
        while True:
            start, end = month.bounds(tz)
            cursor.execute(
                _MONTH_UPSERT, {"device": device_pk, "start": param(start), "end": param(end)}
            )
            if month == last_month:
                break
            month = month.shift(1)


def _as_datetime(value) -> datetime:
    """SQLite returns raw timestamps naive (or as text); PostgreSQL aware."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def on_samples_ingested(sender, device_pk: int, oldest: datetime, newest: datetime, **kwargs):
    refresh_quarters(device_pk, oldest, newest)


def on_device_saved(sender, instance: Device, created: bool, **kwargs) -> None:
    """Months are local: a new time zone moves every month boundary."""
    if not created and instance.timezone != getattr(instance, "_timezone_at_load", None):
        rebuild(instance.pk)
