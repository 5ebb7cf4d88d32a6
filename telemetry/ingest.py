"""Writing a validated batch: one INSERT ... ON CONFLICT (device, ts) DO NOTHING.

The returned count is what the database really inserted, so the answer's duplicates
are exact even when two overlapping batches race each other.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from itertools import repeat
from typing import Any

import psycopg
from django.db import connection, transaction
from django.utils import timezone

import p1wire as wire
from telemetry import pgarrays, rollups, segments
from telemetry.models import Sample

COLUMNS = tuple(wire.SAMPLE_FIELDS)
_TABLE = Sample._meta.db_table
_PG_TYPES = {
    wire.TIMESTAMP: "timestamptz[]",
    wire.POWER: "float8[]",
    wire.REGISTER: "float8[]",
    wire.MEASURE: "float8[]",
    wire.TARIFF: "int2[]",
}
_PG_ENCODERS = {
    wire.TIMESTAMP: pgarrays.timestamptz_array,
    wire.POWER: pgarrays.float8_array,
    wire.REGISTER: pgarrays.float8_array,
    wire.MEASURE: pgarrays.float8_array,
    wire.TARIFF: pgarrays.int2_array,
}
_COLUMN_ENCODERS = [_PG_ENCODERS[kind] for kind in wire.SAMPLE_FIELDS.values()]
_COLUMN_LIST = ", ".join(("device_id", *COLUMNS))
# Only our own identifiers are formatted in; values always go as parameters.
# %b: the column arrays travel in binary (see telemetry.pgarrays).
_PG_UNNEST = ", ".join(f"%b::{_PG_TYPES[kind]}" for kind in wire.SAMPLE_FIELDS.values())
_PG_INSERT = (
    f"INSERT INTO {_TABLE} ({_COLUMN_LIST}) SELECT %b, * FROM unnest({_PG_UNNEST}) "  # noqa: S608
    "ON CONFLICT (device_id, ts) DO NOTHING"
)
_PG_INSERT_WITH_ROLLUPS = rollups.pg_insert_with_rollups(_PG_INSERT)
_SQLITE_PLACEHOLDERS = ", ".join(["%s"] * (len(COLUMNS) + 1))
_SQLITE_INSERT = (
    f"INSERT INTO {_TABLE} ({_COLUMN_LIST}) VALUES ({_SQLITE_PLACEHOLDERS}) "  # noqa: S608
    "ON CONFLICT (device_id, ts) DO NOTHING"
)


AfterInsert = Callable[[datetime, datetime, int], None]


def insert_columns(
    device_pk: int,
    columns: list[list[Any] | None],
    after_insert: AfterInsert | None = None,
) -> int:
    """Insert one batch given as columns (wire.SAMPLE_FIELDS order, None for a field no
    sample has) and keep the rollups and register breaks current; returns how many rows
    were new. ``after_insert(oldest, newest, inserted)`` runs when rows were new, where
    it sees them committed with everything derived from them (telemetry.pipeline)."""
    if not columns[0]:
        return 0
    oldest, newest = min(columns[0]), max(columns[0])
    if connection.vendor == "postgresql" and not rollups.maintained_by_ingest():
        # TimescaleDB: the samples and their register breaks commit together; the
        # aggregates are refreshed after that (outside any transaction) and before
        # the following steps read them.
        with transaction.atomic():
            inserted = _insert_postgresql(device_pk, columns)
            if inserted:
                segments.refresh_breaks(device_pk, oldest, newest)
        if inserted:
            if oldest < timezone.now() - rollups.REFRESH_IF_OLDER_THAN:
                rollups.timescale_refresh(oldest, newest)
            if after_insert is not None:
                with transaction.atomic():
                    after_insert(oldest, newest, inserted)
        return inserted
    # Samples, rollups, register breaks and what the following steps derive commit
    # together: one commit (one WAL flush) per batch, and no derived row can miss a
    # batch that was stored.
    with transaction.atomic():
        if connection.vendor == "postgresql":
            inserted = _insert_postgresql(device_pk, columns)
        else:
            inserted = _insert_sqlite(device_pk, columns)
        if inserted:
            segments.refresh_breaks(device_pk, oldest, newest)
            if after_insert is not None:
                after_insert(oldest, newest, inserted)
    return inserted


def _insert_postgresql(device_pk: int, columns: list[list[Any] | None]) -> int:
    # Django's cursor binds client-side (text); the driver's own cursor sends the arrays
    # in binary, packed by telemetry.pgarrays. Errors still go through Django's mapping
    # (503 on an outage). One statement is atomic by itself: no BEGIN/COMMIT round trips.
    # unnest() pads a NULL array with NULLs, so absent fields cost nothing.
    encoded = [
        None if column is None else encode(column)
        for encode, column in zip(_COLUMN_ENCODERS, columns, strict=True)
    ]
    with connection.wrap_database_errors:
        connection.ensure_connection()
        # Django makes ClientCursor the default; binary needs a server-binding cursor.
        with psycopg.Cursor(connection.connection) as cursor:
            for kind, dumper in pgarrays.DUMPERS.items():
                cursor.adapters.register_dumper(kind, dumper)
            if rollups.maintained_by_ingest():
                cursor.execute(_PG_INSERT_WITH_ROLLUPS, [device_pk, *encoded])
                return cursor.fetchone()[0]
            cursor.execute(_PG_INSERT, [device_pk, *encoded])
            return cursor.rowcount


def _insert_sqlite(device_pk: int, columns: list[list[Any] | None]) -> int:
    # executemany is many statements: the transaction makes the batch all-or-nothing.
    with transaction.atomic():
        inserted = sqlite_insert_rows(device_pk, columns)
        if inserted:
            rollups.sqlite_refresh(device_pk, columns[0])
    return inserted


def sqlite_insert_rows(
    device_pk: int,
    columns: list[list[Any] | None],
    adapt_ts: Callable[[datetime], Any] | None = None,
) -> int:
    """The SQLite insert alone (no transaction, no rollups); returns the new rows.

    demo.bulkload shares it and refreshes rollups its own way; ``adapt_ts`` lets it pass
    a faster timestamp adapter than the backend's.
    """
    size = len(columns[0])
    adapt = adapt_ts or connection.ops.adapt_datetimefield_value
    filled = [
        [adapt(v) if v is not None else None for v in column]
        if kind == wire.TIMESTAMP and column is not None
        else (column if column is not None else repeat(None, size))
        for column, kind in zip(columns, wire.SAMPLE_FIELDS.values(), strict=True)
    ]
    params = [[device_pk, *row] for row in zip(*filled, strict=False)]
    with connection.cursor() as cursor:
        cursor.executemany(_SQLITE_INSERT, params)
        return cursor.rowcount
