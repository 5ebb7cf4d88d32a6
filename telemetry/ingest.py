"""Writing a validated batch: one INSERT ... ON CONFLICT (device, ts) DO NOTHING.

The returned count is what the database really inserted, so the answer's duplicates
are exact even when two overlapping batches race each other.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import cache
from django.db import connection, transaction

from edgeclient import wire
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
_COLUMN_LIST = ", ".join(("device_id", *COLUMNS))
# Only our own identifiers are formatted in; values always go as parameters.
_PG_UNNEST = ", ".join(f"%s::{_PG_TYPES[kind]}" for kind in wire.SAMPLE_FIELDS.values())
_PG_INSERT = (
    f"INSERT INTO {_TABLE} ({_COLUMN_LIST}) SELECT %s, * FROM unnest({_PG_UNNEST}) "  # noqa: S608
    "ON CONFLICT (device_id, ts) DO NOTHING"
)
_SQLITE_PLACEHOLDERS = ", ".join(["%s"] * (len(COLUMNS) + 1))
_SQLITE_INSERT = (
    f"INSERT INTO {_TABLE} ({_COLUMN_LIST}) VALUES ({_SQLITE_PLACEHOLDERS}) "  # noqa: S608
    "ON CONFLICT (device_id, ts) DO NOTHING"
)
_TIMESTAMP_POSITIONS = [i for i, k in enumerate(wire.SAMPLE_FIELDS.values()) if k == wire.TIMESTAMP]


def insert_rows(device_pk: int, rows: list[list[Any]]) -> int:
    """Insert rows (wire.SAMPLE_FIELDS order); returns how many were new."""
    if not rows:
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_PG_INSERT, [device_pk, *map(list, zip(*rows, strict=False))])
            return cursor.rowcount
        adapt = connection.ops.adapt_datetimefield_value
        params = []
        for row in rows:
            values = list(row)
            for i in _TIMESTAMP_POSITIONS:
                if values[i] is not None:
                    values[i] = adapt(values[i])
            params.append([device_pk, *values])
        cursor.executemany(_SQLITE_INSERT, params)
        return cursor.rowcount


def realtime_cache_key(device_id: str) -> str:
    return f"realtime:{device_id}"


def refresh_realtime_cache(device_id: str) -> None:
    """Drop the device's cached realtime answer so the next read sees this batch."""
    cache.delete(realtime_cache_key(device_id))
