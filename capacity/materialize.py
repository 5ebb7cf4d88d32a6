"""Keeping capacity_quarter current as samples arrive.

A batch changes the quarters it lands in and, through boundary interpolation, the
nearest non-empty quarter on either side. Those are recomputed from the 15-minute
rollup with the same SQL the rules are tested against, and upserted.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection

from capacity.queries import param, quarters_sql
from capacity.rules import QUARTER
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


def refresh_quarters(device_pk: int, oldest: datetime, newest: datetime) -> None:
    """Recompute the quarters holding [oldest, newest] and their non-empty neighbours."""
    lo, hi = bucket_start(oldest, QUARTER), bucket_start(newest, QUARTER)
    with connection.cursor() as cursor:
        cursor.execute(_NEIGHBOURS, {"device": device_pk, "lo": param(lo), "hi": param(hi)})
        before, after = cursor.fetchone()
        start = before if before is not None else param(lo)
        end = param(_as_datetime(after) + QUARTER) if after is not None else param(hi + QUARTER)
        cursor.execute(quarters_sql() + _UPSERT, {"device": device_pk, "start": start, "end": end})


def rebuild(device_pk: int) -> None:
    """Recompute every quarter of a device (after a bulk load that bypassed ingest)."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM capacity_quarter WHERE device_id = %s", [device_pk])
        cursor.execute(
            "SELECT min(bucket), max(bucket) FROM telemetry_quarter WHERE device_id = %s",
            [device_pk],
        )
        first, last = cursor.fetchone()
        if first is None:
            return
        cursor.execute(
            quarters_sql() + _UPSERT,
            {"device": device_pk, "start": first, "end": param(_as_datetime(last) + QUARTER)},
        )


def _as_datetime(value) -> datetime:
    """SQLite returns raw timestamps naive; PostgreSQL aware."""
    from datetime import UTC

    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def on_samples_ingested(sender, device_pk: int, oldest: datetime, newest: datetime, **kwargs):
    refresh_quarters(device_pk, oldest, newest)
