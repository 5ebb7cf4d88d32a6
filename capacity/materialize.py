"""Keeping capacity_quarter and capacity_month current as samples arrive.

A batch changes the quarters it lands in and, through boundary interpolation, the
nearest non-empty quarter on either side. Those are recomputed from the 15-minute
rollup with the same SQL the rules are tested against, and upserted; then the peak
of every local month those quarters fall in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction

from capacity.queries import SPAN_COLUMNS, quarters_sql
from capacity.realtime import forget_realtime
from capacity.rules import COMPLETE_COVERAGE, QUARTER, Month
from telemetry import segments, series_blocks, series_cache
from telemetry.models import Device
from telemetry.pipeline import StoredBatch
from telemetry.storage import plan_for
from telemetry.timegrid import HOUR, bucket_start

_UPSERT = """
INSERT INTO capacity_quarter
    (device_id, bucket, kw, coverage, sample_count, first_ts, last_ts)
SELECT device, bucket, CASE WHEN kw < 0 THEN 0 ELSE kw END,
    CASE WHEN coverage > 1 THEN 1 ELSE coverage END, sample_count, first_ts, last_ts
FROM quarters WHERE true
ON CONFLICT (device_id, bucket) DO UPDATE SET
    kw = excluded.kw, coverage = excluded.coverage, sample_count = excluded.sample_count,
    first_ts = excluded.first_ts, last_ts = excluded.last_ts
"""

# Each span's nearest non-empty quarters either side: a batch changes them too.
_NEIGHBOURS_COLUMNS = (("idx", "int"), ("device", "int"), ("lo", "ts"), ("hi", "ts"))
_NEIGHBOURS = """
WITH spans AS ({spans})
SELECT s.idx,
    (SELECT max(bucket) FROM telemetry_quarter WHERE device_id = s.device AND bucket < s.lo),
    (SELECT min(bucket) FROM telemetry_quarter WHERE device_id = s.device AND bucket > s.hi)
FROM spans s
"""

# One row per device and local month the recomputed quarters fall in: the month's
# bounds, the recomputed range inside it [lo, hi), the first hour starting there
# (hour_lo), and its quarters with data and complete quarters in that range before the
# recomputation.
_MONTH_COLUMNS = (
    ("idx", "int"),
    ("device", "int"),
    ("month_start", "ts"),
    ("month_end", "ts"),
    ("lo", "ts"),
    ("hi", "ts"),
    ("hour_lo", "ts"),
    ("with_data_before", "int"),
    ("complete_before", "int"),
)

# The quarters (with data, complete) of each month's range [lo, hi).
_RANGE_COUNTS = f"""
(SELECT count(*) FROM capacity_quarter
    WHERE device_id = p.device AND bucket >= p.lo AND bucket < p.hi) AS with_data,
(SELECT count(*) FROM capacity_quarter
    WHERE device_id = p.device AND bucket >= p.lo AND bucket < p.hi
        AND coverage >= {COMPLETE_COVERAGE}) AS complete
"""

_COUNTS_IN_RANGE = f"""
WITH months AS ({{months}})
SELECT p.idx, {_RANGE_COUNTS}
FROM months p
"""

# A month's peak changes only through the quarters just recomputed. If the stored peak
# is one of them it may have gone down, so the month is searched again (rare: only
# while the running quarter is the peak); otherwise the best recomputed quarter
# replaces the peak only when it beats it.
_MONTH_RESEARCH = """
WITH months AS ({months})
UPDATE capacity_month SET (peak_kw, peak_bucket) = (
    SELECT kw, bucket FROM capacity_quarter
    WHERE device_id = p.device AND bucket >= p.month_start AND bucket < p.month_end
    ORDER BY kw DESC, bucket LIMIT 1)
FROM months p
WHERE capacity_month.device_id = p.device AND capacity_month.month_start = p.month_start
    AND capacity_month.peak_bucket >= p.lo AND capacity_month.peak_bucket < p.hi
"""

_MONTH_CANDIDATE = """
WITH months AS ({months})
INSERT INTO capacity_month (device_id, month_start, month_end, peak_kw, peak_bucket)
SELECT device, month_start, month_end, kw, bucket FROM (
    SELECT p.device, p.month_start, p.month_end, q.kw, q.bucket,
        ROW_NUMBER() OVER (PARTITION BY p.idx ORDER BY q.kw DESC, q.bucket) AS place
    FROM months p {each_quarter}
) best
WHERE place = 1
ON CONFLICT (device_id, month_start) DO UPDATE SET
    peak_kw = excluded.peak_kw, peak_bucket = excluded.peak_bucket
WHERE excluded.peak_kw > capacity_month.peak_kw
    OR (excluded.peak_kw = capacity_month.peak_kw
        AND excluded.peak_bucket < capacity_month.peak_bucket)
"""

# The month's quarter counts, kept by difference: the recomputed range's counts after
# the upsert less its counts before, so a batch counts a few quarters, not the month.
_MONTH_COUNTS = f"""
WITH months AS ({{months}})
UPDATE capacity_month SET (quarters_with_data, complete_quarters) = (
    SELECT quarters_with_data - p.with_data_before + with_data,
        complete_quarters - p.complete_before + complete
    FROM (SELECT {_RANGE_COUNTS}) AS counted)
FROM months p
WHERE capacity_month.device_id = p.device AND capacity_month.month_start = p.month_start
"""

# The meter's running monthly peak as it last reported it: its highest hour in the
# month, the latest such hour on a tie (as the month answers always chose).
# An hour's meter_peak_w only rises as samples arrive, so the best hour of the range
# just recomputed replaces the kept one when it is at least as high and not earlier.
# A scalar subquery, not EXISTS: PostgreSQL would make EXISTS a join, which on
# TimescaleDB aggregates every device's recent samples (telemetry_hour is a continuous
# aggregate); a subquery per row bounds its own index scan by the row's device.
_MONTH_METER_PEAK = """
WITH months AS ({months})
UPDATE capacity_month SET (meter_peak_w, meter_peak_bucket, meter_peak_ts) = (
    SELECT meter_peak_w, bucket, meter_peak_ts FROM telemetry_hour
    WHERE device_id = p.device AND bucket >= p.hour_lo AND bucket < p.hi
        AND meter_peak_w IS NOT NULL
    ORDER BY meter_peak_w DESC, bucket DESC LIMIT 1)
FROM months p
WHERE capacity_month.device_id = p.device AND capacity_month.month_start = p.month_start
    AND (
        SELECT 1 FROM telemetry_hour h
        WHERE h.device_id = p.device AND h.bucket >= p.hour_lo AND h.bucket < p.hi
            AND h.meter_peak_w IS NOT NULL
            AND (capacity_month.meter_peak_w IS NULL
                OR h.meter_peak_w > capacity_month.meter_peak_w
                OR (h.meter_peak_w = capacity_month.meter_peak_w
                    AND h.bucket >= capacity_month.meter_peak_bucket))
        LIMIT 1) = 1
"""


def refresh_after_batches(batches: Sequence[StoredBatch]) -> None:
    """Ingest step: recompute the quarters holding each batch's span, their non-empty
    neighbours, and the months those quarters are in: each statement once for all the
    batches."""
    if not batches:
        return
    plan = plan_for()
    quarters = [(bucket_start(b.oldest, QUARTER), bucket_start(b.newest, QUARTER)) for b in batches]
    rows = [(i, b.device_pk, *quarters[i]) for i, b in enumerate(batches)]
    sql = _NEIGHBOURS.format(spans=plan.rows_sql("spans", _NEIGHBOURS_COLUMNS))
    with plan.prepared_cursor() as cursor:
        cursor.execute(sql, {"spans": plan.rows_param(rows)})
        found = {idx: (before, after) for idx, before, after in cursor.fetchall()}
    ranges = []
    for i, batch in enumerate(batches):
        (lo, hi), (before, after) = quarters[i], found[i]
        first = _as_datetime(before) if before is not None else lo
        last = _as_datetime(after) if after is not None else hi
        ranges.append(_Range(batch.device_pk, first, last, ZoneInfo(batch.timezone)))
    _recompute(ranges)


def rebuild(device_pk: int) -> None:
    """Recompute the register breaks, every quarter and every month of a device (after
    a bulk load that bypassed ingest, a change of the device's time zone, or of the
    segment rule)."""
    segments.rebuild_breaks(device_pk)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM capacity_quarter WHERE device_id = %s", [device_pk])
        cursor.execute("DELETE FROM capacity_month WHERE device_id = %s", [device_pk])
        cursor.execute(
            "SELECT min(bucket), max(bucket) FROM telemetry_quarter WHERE device_id = %s",
            [device_pk],
        )
        first, last = cursor.fetchone()
    device = Device.objects.values_list("device_id", "timezone").get(pk=device_pk)
    if first is not None:
        tz = ZoneInfo(device[1])
        _recompute([_Range(device_pk, _as_datetime(first), _as_datetime(last), tz)])
        # The register breaks were rewritten: every cached series answer over the data
        # may have changed (ingest drops only the answers a batch touches), and every
        # stored block (its zone too); computed again once this commits.
        series_cache.forget_touched(device_pk, _as_datetime(first), _as_datetime(last) + QUARTER)
        series_blocks.forget_all(device_pk)
        transaction.on_commit(lambda: series_blocks.fill_device(device_pk), robust=True)
    # The realtime answer too (its quarter and the month's peak so far): it is cached
    # until a batch or the worker's steps drop it, or for CACHE_TTL_S.
    transaction.on_commit(lambda: forget_realtime(device_pk, device[0]))


@dataclass
class _Range:
    """Quarters of one device to recompute, by bucket start: first to last."""

    device_pk: int
    first: datetime
    last: datetime
    tz: ZoneInfo


def _merged(ranges: list[_Range]) -> list[_Range]:
    """Per device, overlapping ranges made one: no quarter is recomputed twice in one
    statement (an upsert cannot change a row twice)."""
    merged: list[_Range] = []
    for item in sorted(ranges, key=lambda r: (r.device_pk, r.first)):
        last = merged[-1] if merged else None
        if last is not None and last.device_pk == item.device_pk and item.first <= last.last:
            last.last = max(last.last, item.last)
        else:
            merged.append(_Range(item.device_pk, item.first, item.last, item.tz))
    return merged


def _months(ranges: list[_Range]) -> list[dict[str, Any]]:
    """The (device, local month) rows of _MONTH_COLUMNS the ranges touch; a device's
    ranges in one month are covered by one row from the first to the last (the
    statements are exact over any range holding every quarter recomputed)."""
    months: dict[tuple[int, datetime], dict[str, Any]] = {}
    for item in ranges:
        month, last_month = Month.of(item.first, item.tz), Month.of(item.last, item.tz)
        while True:
            start, end = month.bounds(item.tz)
            lo, hi = max(start, item.first), min(end, item.last + QUARTER)
            row = months.setdefault(
                (item.device_pk, start),
                {"device": item.device_pk, "start": start, "end": end, "lo": lo, "hi": hi},
            )
            row["lo"], row["hi"] = min(row["lo"], lo), max(row["hi"], hi)
            if month == last_month:
                break
            month = month.shift(1)
    rows = list(months.values())
    for row in rows:
        # Hours are the meter peak's grain; those starting in the month only.
        row["hour_lo"] = max(row["start"], bucket_start(row["lo"], HOUR))
    return rows


def _recompute(ranges: list[_Range]) -> None:
    """The quarters of every range and every local month they touch."""
    ranges = _merged(ranges)
    months = _months(ranges)
    plan = plan_for()
    month_rows = plan.rows_sql("months", _MONTH_COLUMNS)
    spans = [(i, r.device_pk, r.first, r.last + QUARTER) for i, r in enumerate(ranges)]

    def month_param(counts: dict[int, tuple[int, int]]) -> str:
        rows = []
        for i, m in enumerate(months):
            bounds = (m["start"], m["end"], m["lo"], m["hi"], m["hour_lo"])
            rows.append((i, m["device"], *bounds, *counts.get(i, (0, 0))))
        return plan.rows_param(rows)

    with plan.prepared_cursor() as cursor:
        # The counts before are not known yet: this statement is what finds them.
        cursor.execute(_COUNTS_IN_RANGE.format(months=month_rows), {"months": month_param({})})
        before = {idx: (with_data, complete) for idx, with_data, complete in cursor.fetchall()}
        cursor.execute(
            quarters_sql(plan.rows_sql("spans", SPAN_COLUMNS)) + _UPSERT,
            {"spans": plan.rows_param(spans)},
        )
        params = {"months": month_param(before)}
        each_quarter = plan.join_each(
            "capacity_quarter",
            "q",
            "q.device_id = p.device AND q.bucket >= p.lo AND q.bucket < p.hi",
        )
        for statement in (_MONTH_RESEARCH, _MONTH_CANDIDATE, _MONTH_COUNTS, _MONTH_METER_PEAK):
            cursor.execute(statement.format(months=month_rows, each_quarter=each_quarter), params)


def _as_datetime(value: Any) -> datetime:
    """A raw SQL timestamp as an aware datetime, whatever the database hands back."""
    return plan_for().to_datetime(value)


def on_device_saved(sender: type[Device], instance: Device, created: bool, **kwargs: Any) -> None:
    """Months are local: a new time zone moves every month boundary."""
    if not created and instance.timezone != getattr(instance, "_timezone_at_load", None):
        rebuild(instance.pk)
