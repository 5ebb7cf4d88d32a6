"""SQLite: the embedded default. Rollups are tables; after the samples are inserted the
touched buckets are recomputed from the raw rows, in the same transaction.

The demo's bulk load (``insert_history``) inserts the same rows with the same conflict
rule and recomputes the touched range from one ordered read, bucket by bucket with the
very function the ingest refresh uses (rollups.aggregate_bucket), so both paths store
the same values (tests/test_demo_history.py compares them); bench/demo_backfill.py
measures the two on the same history.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from itertools import groupby, pairwise, repeat
from typing import Any

from django.db import transaction

import p1wire as wire
from telemetry.storage.base import Columns, StoragePlan, timestamps
from telemetry.storage.rollups import (
    RELATIONS,
    ROLLUP_COLUMNS,
    SAMPLE_INPUT_COLUMNS,
    SERIES_COLUMNS,
    aggregate_bucket,
    bucket_runs,
)
from telemetry.timegrid import HOUR, QUARTER, bucket_start

_TABLE = "telemetry_sample"
_COLUMN_LIST = ", ".join(("device_id", *wire.SAMPLE_FIELDS))
_PLACEHOLDERS = ", ".join(["%s"] * (len(wire.SAMPLE_FIELDS) + 1))
_INSERT = (
    f"INSERT INTO {_TABLE} ({_COLUMN_LIST}) VALUES ({_PLACEHOLDERS}) "
    "ON CONFLICT (device_id, ts) DO NOTHING"
)
_SELECT = (
    f"SELECT {', '.join(SAMPLE_INPUT_COLUMNS)} FROM {_TABLE} "
    "WHERE device_id = %s AND ts >= %s AND ts < %s ORDER BY ts"
)
_ROLLUP_INSERT = (
    "INSERT INTO {table} (" + ", ".join(ROLLUP_COLUMNS) + ") "
    "VALUES (" + ", ".join(["%s"] * len(ROLLUP_COLUMNS)) + ")"
)
_DELETE_RANGE = "DELETE FROM {table} WHERE device_id = %s AND bucket >= %s AND bucket < %s"
_TIMESTAMP_INDEXES = [
    ROLLUP_COLUMNS.index(name) for name in ("bucket", "first_ts", "last_ts", "meter_peak_ts")
]


class SqlitePlan(StoragePlan):
    name = "sqlite"

    def insert_rows(
        self, device_pk: int, columns: Columns, *, owed_by: int | None = None, owed: bool = False
    ) -> int:
        # executemany is many statements: the caller's transaction makes the batch
        # all-or-nothing.
        inserted = self._insert_samples(device_pk, columns)
        if inserted:
            ts = timestamps(columns)
            self._refresh_buckets(device_pk, ts)
            if owed:
                from telemetry.models import PendingBatch

                PendingBatch.objects.using(self.alias).create(
                    device_id=device_pk,
                    token_id=owed_by,
                    oldest=min(ts),
                    newest=max(ts),
                    inserted=inserted,
                )
                # The stored series blocks the rows reach, in the batch's commit as on
                # PostgreSQL (storage.postgres.BLOCKS_REACHED).
                with self.connection.cursor() as cursor:
                    self.delete_blocks_reached(cursor, [(device_pk, min(ts), max(ts))])
        return inserted

    def insert_history(self, device_pk: int, columns: Columns) -> int:
        if not columns[0]:
            return 0
        with transaction.atomic(using=self.alias):
            inserted = self._insert_samples(device_pk, columns, adapt_ts=_sqlite_ts)
            if inserted:
                self._refresh_range(device_pk, min(columns[0]), max(columns[0]))
        return inserted

    def epoch_sql(self, column: str) -> str:
        # Django stores 'YYYY-MM-DD HH:MM:SS[.ffffff]'. julianday() keeps only
        # milliseconds, so whole seconds come from strftime('%s') and the fraction is
        # added as text.
        return (
            f"(CAST(strftime('%%s', {column}) AS REAL)"
            f" + COALESCE(CAST(NULLIF(substr({column}, 20), '') AS REAL), 0.0))"
        )

    def to_datetime(self, value: Any) -> datetime:
        # Raw SQL hands timestamps back naive (or as text); they are UTC.
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    def rows_sql(self, param: str, columns: Sequence[tuple[str, str]]) -> str:
        # Timestamps come as Django stores them (text that compares in time order).
        picked = ", ".join(
            f"json_extract(r.value, '$[{i}]') AS {name}" for i, (name, _) in enumerate(columns)
        )
        return f"SELECT {picked} FROM json_each(%({param})s) AS r"

    def rows_param(self, rows: Iterable[Sequence[int | datetime]]) -> str:
        return json.dumps(
            [[_sqlite_ts(v) if isinstance(v, datetime) else v for v in row] for row in rows]
        )

    def series_rows_sql(self, relation: str) -> str:
        columns = ", ".join(f"r.{c}" for c in SERIES_COLUMNS)
        # Calendar buckets: driven from the boundaries (CROSS JOIN keeps that order;
        # SQLite's planner would otherwise scan the boundaries for every row), each
        # bucket reads its rows by the rollup's (device, bucket) key.
        return f"""
        SELECT b.key + 1 AS k, json_extract(b.value, '$[0]') AS lo,
            json_extract(b.value, '$[1]') AS hi, {columns}
        FROM json_each(%(bounds)s) b
        CROSS JOIN {relation} r ON r.device_id = %(device)s
            AND r.bucket >= json_extract(b.value, '$[0]')
            AND r.bucket < json_extract(b.value, '$[1]')
        """

    def series_bounds(self, boundaries: list[datetime]) -> Any:
        # [lo, hi] per bucket, as Django stores timestamps (text compares in time order).
        texts = [_sqlite_ts(b) for b in boundaries]
        return json.dumps(list(pairwise(texts)))

    # --- the writes -------------------------------------------------------------------

    def _insert_samples(
        self,
        device_pk: int,
        columns: Columns,
        adapt_ts: Callable[[datetime], Any] | None = None,
    ) -> int:
        size = len(timestamps(columns))
        adapt = adapt_ts or self.connection.ops.adapt_datetimefield_value
        filled = [
            [adapt(v) if v is not None else None for v in column]
            if kind == wire.TIMESTAMP and column is not None
            else (column if column is not None else repeat(None, size))
            for column, kind in zip(columns, wire.SAMPLE_FIELDS.values(), strict=True)
        ]
        params = [[device_pk, *row] for row in zip(*filled, strict=False)]
        with self.connection.cursor() as cursor:
            cursor.executemany(_INSERT, params)
            return cursor.rowcount

    def _refresh_buckets(self, device_pk: int, timestamps: Iterable[datetime]) -> None:
        """Recompute every quarter and hour the given sample times fall in, from raw rows.

        Touched buckets that follow each other are one run: one read, one delete and one
        insert per run, so a long backlog costs a few statements instead of three per
        bucket. The samples are streamed in time order and folded bucket by bucket, so
        memory holds one bucket's samples at a time.
        """
        from telemetry.models import HourRollup, QuarterRollup, Rollup, Sample

        adapt = self.connection.ops.adapt_datetimefield_value
        ts_list = list(timestamps)
        widths: tuple[tuple[type[Rollup], timedelta], ...] = (
            (QuarterRollup, QUARTER),
            (HourRollup, HOUR),
        )
        for model, width in widths:
            table = model._meta.db_table
            for run_start, run_end in bucket_runs(
                (bucket_start(ts, width) for ts in ts_list), width
            ):
                samples = (
                    Sample.objects.filter(device_id=device_pk, ts__gte=run_start, ts__lt=run_end)
                    .order_by("ts")
                    .values_list(*SAMPLE_INPUT_COLUMNS)
                )
                rollups = [
                    aggregate_bucket(device_pk, bucket, list(rows))
                    for bucket, rows in _by_bucket(samples.iterator(chunk_size=2000), width)
                ]
                with self.connection.cursor() as cursor:
                    cursor.execute(
                        _DELETE_RANGE.format(table=table),
                        [device_pk, adapt(run_start), adapt(run_end)],
                    )
                # Rollup is abstract (its type has no `objects`): the manager Django gives
                # code written over several models.
                model._default_manager.bulk_create(
                    [model(**dict(zip(ROLLUP_COLUMNS, values, strict=True))) for values in rollups]
                )

    def _refresh_range(self, device_pk: int, oldest: datetime, newest: datetime) -> None:
        """Recompute every quarter and hour bucket holding a sample in [oldest, newest]:
        one ordered raw read (the ORM's per-value conversions cost more than the whole
        insert), then every bucket of both widths from it."""
        adapt = _sqlite_ts
        lo = bucket_start(oldest, HOUR)
        hi = bucket_start(newest, HOUR) + HOUR
        with self.connection.cursor() as cursor:
            cursor.execute(_SELECT, [device_pk, adapt(lo), adapt(hi)])
            rows = cursor.fetchall()
        moments = [self.to_datetime(row[0]) for row in rows]
        for table, width in RELATIONS.items():
            buckets = [bucket_start(moment, width) for moment in moments]
            values = []
            start = 0
            for bucket, group in groupby(buckets):
                count = sum(1 for _ in group)
                row = aggregate_bucket(device_pk, bucket, rows[start : start + count])
                for index in _TIMESTAMP_INDEXES:
                    row[index] = None if row[index] is None else adapt(self.to_datetime(row[index]))
                values.append(row)
                start += count
            with self.connection.cursor() as cursor:
                cursor.execute(_DELETE_RANGE.format(table=table), [device_pk, adapt(lo), adapt(hi)])
                cursor.executemany(_ROLLUP_INSERT.format(table=table), values)


def _by_bucket(
    rows: Iterable[tuple[Any, ...]], width: timedelta
) -> Iterator[tuple[datetime, Iterator[tuple[Any, ...]]]]:
    """Time-ordered sample rows (ts first), a run per bucket of ``width``."""
    return groupby(rows, key=lambda row: bucket_start(row[0], width))


def _sqlite_ts(value: datetime) -> str:
    """What Django's SQLite backend stores for an aware datetime (UTC, naive text), in
    a fraction of its adapter's time: this runs for every timestamp of a history."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return str(value.replace(tzinfo=None))
