"""Keeping capacity_quarter and capacity_month current as samples arrive.

A batch changes the quarters it lands in and, through boundary interpolation, the
nearest non-empty quarter on either side. Those are recomputed from the 15-minute
rollup with the same SQL the rules are tested against, and upserted; then the peak
of every local month those quarters fall in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction

from capacity.queries import param, quarters_sql
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

# A month's peak changes only through the quarters just recomputed. If the stored peak
# is one of them it may have gone down, so the month is searched again (rare: only
# while the running quarter is the peak); otherwise the best recomputed quarter
# replaces the peak only when it beats it.
_MONTH_RESEARCH = """
UPDATE capacity_month SET (peak_kw, peak_bucket) = (
    SELECT kw, bucket FROM capacity_quarter
    WHERE device_id = %(device)s AND bucket >= %(start)s AND bucket < %(end)s
    ORDER BY kw DESC, bucket LIMIT 1)
WHERE device_id = %(device)s AND month_start = %(start)s
    AND peak_bucket >= %(lo)s AND peak_bucket < %(hi)s
"""

_MONTH_CANDIDATE = """
INSERT INTO capacity_month (device_id, month_start, month_end, peak_kw, peak_bucket)
SELECT %(device)s, %(start)s, %(end)s, kw, bucket FROM capacity_quarter
WHERE device_id = %(device)s AND bucket >= %(lo)s AND bucket < %(hi)s
ORDER BY kw DESC, bucket LIMIT 1
ON CONFLICT (device_id, month_start) DO UPDATE SET
    peak_kw = excluded.peak_kw, peak_bucket = excluded.peak_bucket
WHERE excluded.peak_kw > capacity_month.peak_kw
    OR (excluded.peak_kw = capacity_month.peak_kw
        AND excluded.peak_bucket < capacity_month.peak_bucket)
"""

# The month's complete quarters, kept by difference: the recomputed range's count after
# the upsert less its count before (%(before)s), so a batch counts a few quarters, not
# the month.
_COMPLETE_IN_RANGE = f"""
SELECT count(*) FROM capacity_quarter
WHERE device_id = %(device)s AND bucket >= %(lo)s AND bucket < %(hi)s
    AND coverage >= {COMPLETE_COVERAGE}
"""

_MONTH_COMPLETE = f"""
UPDATE capacity_month SET complete_quarters = complete_quarters - %(before)s + (
    SELECT count(*) FROM capacity_quarter
    WHERE device_id = %(device)s AND bucket >= %(lo)s AND bucket < %(hi)s
        AND coverage >= {COMPLETE_COVERAGE})
WHERE device_id = %(device)s AND month_start = %(start)s
"""

# The meter's running monthly peak as it last reported it: its highest hour in the
# month, the latest such hour on a tie (as capacity.queries.meter_peaks always chose).
# An hour's meter_peak_w only rises as samples arrive, so the best hour of the range
# just recomputed replaces the kept one when it is at least as high and not earlier.
_MONTH_METER_PEAK = """
UPDATE capacity_month SET (meter_peak_w, meter_peak_bucket, meter_peak_ts) = (
    SELECT meter_peak_w, bucket, meter_peak_ts FROM telemetry_hour
    WHERE device_id = %(device)s AND bucket >= %(hour_lo)s AND bucket < %(hi)s
        AND meter_peak_w IS NOT NULL
    ORDER BY meter_peak_w DESC, bucket DESC LIMIT 1)
WHERE device_id = %(device)s AND month_start = %(start)s
    AND EXISTS (
        SELECT 1 FROM telemetry_hour
        WHERE device_id = %(device)s AND bucket >= %(hour_lo)s AND bucket < %(hi)s
            AND meter_peak_w IS NOT NULL
            AND (capacity_month.meter_peak_w IS NULL
                OR meter_peak_w > capacity_month.meter_peak_w
                OR (meter_peak_w = capacity_month.meter_peak_w
                    AND bucket >= capacity_month.meter_peak_bucket)))
"""


def refresh_quarters(
    device_pk: int, oldest: datetime, newest: datetime, tz: ZoneInfo | None = None
) -> None:
    """Recompute the quarters holding [oldest, newest], their non-empty neighbours, and
    the months those quarters are in."""
    lo, hi = bucket_start(oldest, QUARTER), bucket_start(newest, QUARTER)
    with plan_for().prepared_cursor() as cursor:
        cursor.execute(_NEIGHBOURS, {"device": device_pk, "lo": param(lo), "hi": param(hi)})
        before, after = cursor.fetchone()
    first = _as_datetime(before) if before is not None else lo
    last = _as_datetime(after) if after is not None else hi
    _recompute(device_pk, first, last, tz)


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
    if first is not None:
        _recompute(device_pk, _as_datetime(first), _as_datetime(last))
        # The register breaks were rewritten: every cached series answer over the data
        # may have changed (ingest drops only the answers a batch touches), and every
        # stored block (its zone too); computed again once this commits.
        series_cache.forget_touched(device_pk, _as_datetime(first), _as_datetime(last) + QUARTER)
        series_blocks.forget_all(device_pk)
        transaction.on_commit(lambda: series_blocks.fill_device(device_pk), robust=True)
    # The realtime answer too (its quarter and the month's peak so far): it is cached
    # until a batch or the worker's steps drop it, or for CACHE_TTL_S.
    device_id = Device.objects.values_list("device_id", flat=True).get(pk=device_pk)
    transaction.on_commit(lambda: forget_realtime(device_id))


def _recompute(device_pk: int, first: datetime, last: datetime, tz: ZoneInfo | None = None) -> None:
    """Quarters from first to last (bucket starts) and every local month they touch."""
    if tz is None:
        tz = ZoneInfo(Device.objects.values_list("timezone", flat=True).get(pk=device_pk))
    months = []
    month, last_month = Month.of(first, tz), Month.of(last, tz)
    while True:
        start, end = month.bounds(tz)
        lo, hi = max(start, first), min(end, last + QUARTER)
        months.append(
            {
                "device": device_pk,
                "start": param(start),
                "end": param(end),
                "lo": param(lo),
                "hi": param(hi),
                # Hours are the meter peak's grain; those starting in the month only.
                "hour_lo": param(max(start, bucket_start(lo, HOUR))),
            }
        )
        if month == last_month:
            break
        month = month.shift(1)
    with plan_for().prepared_cursor() as cursor:
        for params in months:
            cursor.execute(_COMPLETE_IN_RANGE, params)
            params["before"] = cursor.fetchone()[0]
        cursor.execute(
            quarters_sql() + _UPSERT,
            {"device": device_pk, "start": param(first), "end": param(last + QUARTER)},
        )
        for params in months:
            cursor.execute(_MONTH_RESEARCH, params)
            cursor.execute(_MONTH_CANDIDATE, params)
            cursor.execute(_MONTH_COMPLETE, params)
            cursor.execute(_MONTH_METER_PEAK, params)


def _as_datetime(value: Any) -> datetime:
    """A raw SQL timestamp as an aware datetime, whatever the database hands back."""
    return plan_for().to_datetime(value)


def refresh_after_batch(batch: StoredBatch) -> None:
    """Ingest step: the quarters and month candidates the batch's span touches."""
    refresh_quarters(batch.device_pk, batch.oldest, batch.newest, ZoneInfo(batch.timezone))


def on_device_saved(sender: type[Device], instance: Device, created: bool, **kwargs: Any) -> None:
    """Months are local: a new time zone moves every month boundary."""
    if not created and instance.timezone != getattr(instance, "_timezone_at_load", None):
        rebuild(instance.pk)
