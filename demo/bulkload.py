"""Writing months of history at once.

PostgreSQL goes through telemetry.ingest.insert_columns: its rollup merge is one
set-based statement per batch. On SQLite that path recomputes the touched buckets in
runs of at most 96 buckets (telemetry.rollups.sqlite_refresh); this path is faster.
Here the same rows are inserted with the same conflict rule, and the touched range's
rollups are recomputed from one ordered
read, bucket by bucket with the very function sqlite_refresh uses
(rollups.aggregate_bucket), so both paths store the same values
(tests/test_demo_history.py compares them). bench/demo_backfill.py measures the two on
the same history. The capacity tables are rebuilt once by the caller.

Neither path runs the ingest pipeline's steps (telemetry.pipeline): history is not
live data, and a per-batch quarter refresh would redo what the one rebuild does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import groupby
from typing import Any

from django.db import connection, transaction

from telemetry import rollups
from telemetry.ingest import insert_columns, sqlite_insert_rows
from telemetry.models import HourRollup, QuarterRollup, Sample

_TABLE = Sample._meta.db_table


def insert_history(device_pk: int, columns: list[list[Any] | None], timezone_name: str) -> int:
    """Insert one chunk of samples (wire.SAMPLE_FIELDS order) with its rollups; returns
    how many rows were new. Capacity tables are left to the caller (one rebuild)."""
    if not columns[0]:
        return 0
    if connection.vendor == "postgresql":
        return insert_columns(device_pk, columns)
    return _insert_sqlite(device_pk, columns)


def _insert_sqlite(device_pk: int, columns: list[list[Any] | None]) -> int:
    with transaction.atomic():
        inserted = sqlite_insert_rows(device_pk, columns, adapt_ts=_sqlite_ts)
        if inserted:
            refresh_rollups(device_pk, min(columns[0]), max(columns[0]))
    return inserted


def refresh_rollups(device_pk: int, oldest: datetime, newest: datetime) -> None:
    """Recompute every quarter and hour bucket holding a sample in [oldest, newest]."""
    adapt = _sqlite_ts
    lo = rollups.bucket_start(oldest, rollups.HOUR)
    hi = rollups.bucket_start(newest, rollups.HOUR) + rollups.HOUR
    # A raw read: the ORM's per-value conversions cost more than the whole insert.
    with connection.cursor() as cursor:
        cursor.execute(_SELECT, [device_pk, adapt(lo), adapt(hi)])
        rows = cursor.fetchall()
    moments = [_aware(row[0]) for row in rows]
    for table, width in ((QuarterRollup, rollups.QUARTER), (HourRollup, rollups.HOUR)):
        name = table._meta.db_table
        buckets = [rollups.bucket_start(moment, width) for moment in moments]
        values = []
        start = 0
        for bucket, group in groupby(buckets):
            count = sum(1 for _ in group)
            row = rollups.aggregate_bucket(device_pk, bucket, rows[start : start + count])
            for index in _TIMESTAMP_INDEXES:
                row[index] = None if row[index] is None else adapt(_aware(row[index]))
            values.append(row)
            start += count
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {name} WHERE device_id = %s AND bucket >= %s AND bucket < %s",  # noqa: S608
                [device_pk, adapt(lo), adapt(hi)],
            )
            cursor.executemany(_rollup_insert(name), values)


_TIMESTAMP_INDEXES = [
    rollups.ROLLUP_COLUMNS.index(name)
    for name in ("bucket", "first_ts", "last_ts", "meter_peak_ts")
]
_SELECT = (
    f"SELECT {', '.join(rollups.SAMPLE_INPUT_COLUMNS)} FROM {_TABLE} "  # noqa: S608
    "WHERE device_id = %s AND ts >= %s AND ts < %s ORDER BY ts"
)


def _rollup_insert(table: str) -> str:
    names = ", ".join(rollups.ROLLUP_COLUMNS)
    marks = ", ".join(["%s"] * len(rollups.ROLLUP_COLUMNS))
    return f"INSERT INTO {table} ({names}) VALUES ({marks})"  # noqa: S608 - our own names


def _aware(value: datetime | str) -> datetime:
    """SQLite hands raw timestamps back naive (or as text); they are UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _sqlite_ts(value: datetime) -> str:
    """What Django's SQLite backend stores for an aware datetime (UTC, naive text), in
    a fraction of its adapter's time: this runs for every timestamp of the history."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return str(value.replace(tzinfo=None))
