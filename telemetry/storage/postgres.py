"""PostgreSQL: the production store. What both PostgreSQL plans share (the binary
column insert, the register-break lock, the dialect, the hypertable step), and the plan
without TimescaleDB: rollup tables merged in the same statement that inserts the batch,
from exactly the rows that were new (``RETURNING``), so a retried or overlapping batch
never counts twice and late, out-of-order data lands in the right bucket.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.backends.utils import CursorWrapper

import p1wire as wire
from telemetry.storage import pgarrays
from telemetry.storage.base import Columns, StoragePlan
from telemetry.storage.rollups import ROLLUP_COLUMNS, SERIES_COLUMNS

_TABLE = "telemetry_sample"
_PG_TYPES = {
    wire.TIMESTAMP: "timestamptz[]",
    wire.POWER: "float8[]",
    wire.REGISTER: "float8[]",
    wire.MEASURE: "float8[]",
    wire.TARIFF: "int2[]",
}
_PG_ENCODERS: dict[str, Callable[[Sequence[Any]], pgarrays.BinaryArray]] = {
    wire.TIMESTAMP: pgarrays.timestamptz_array,
    wire.POWER: pgarrays.float8_array,
    wire.REGISTER: pgarrays.float8_array,
    wire.MEASURE: pgarrays.float8_array,
    wire.TARIFF: pgarrays.int2_array,
}
_COLUMN_ENCODERS = [_PG_ENCODERS[kind] for kind in wire.SAMPLE_FIELDS.values()]
_COLUMN_LIST = ", ".join(("device_id", *wire.SAMPLE_FIELDS))
# Only our own identifiers are formatted in; values always go as parameters.
# %b: the column arrays travel in binary (see telemetry.storage.pgarrays).
_UNNEST = ", ".join(f"%b::{_PG_TYPES[kind]}" for kind in wire.SAMPLE_FIELDS.values())
SAMPLE_INSERT = (
    f"INSERT INTO {_TABLE} ({_COLUMN_LIST}) SELECT %b, * FROM unnest({_UNNEST}) "
    "ON CONFLICT (device_id, ts) DO NOTHING"
)

_LOCK = (
    "SELECT count(pg_advisory_xact_lock(%s, k)) "
    "FROM (SELECT k FROM unnest(%s::int[]) AS k ORDER BY k) AS keys"
)
_LOCK_CLASS = 0x5E65  # this lock's namespace among advisory locks ("segs")


class PostgresPlan(StoragePlan):
    """What both PostgreSQL plans do alike."""

    insert_is_one_statement = True

    def _execute_binary(
        self,
        sql: str,
        device_pk: int,
        columns: Columns,
        count: Callable[[psycopg.Cursor], int],
        extra: Sequence[Any] = (),
    ) -> int:
        """Run the insert with the columns bound as binary arrays (then ``extra``);
        ``count`` reads the number of new rows from the cursor."""
        # Django's cursor binds client-side (text); the driver's own cursor sends the
        # arrays in binary, packed by telemetry.storage.pgarrays. Errors still go through
        # Django's mapping (503 on an outage). One statement is atomic by itself.
        # unnest() pads a NULL array with NULLs, so absent fields cost nothing.
        encoded = [
            None if column is None else encode(column)
            for encode, column in zip(_COLUMN_ENCODERS, columns, strict=True)
        ]
        connection = self.connection
        with connection.wrap_database_errors:
            connection.ensure_connection()
            # Django makes ClientCursor the default; binary needs a server-binding cursor.
            # A raw cursor with PostgreSQL's own $n placeholders: psycopg does not parse
            # a query this long on every call (it caches only short ones), and the
            # statement is prepared once per connection, so neither side plans it again.
            with psycopg.RawCursor(connection.connection) as cursor:
                for kind, dumper in pgarrays.DUMPERS.items():
                    cursor.adapters.register_dumper(kind, dumper)
                cursor.execute(
                    native_placeholders(sql), [device_pk, *encoded, *extra], prepare=True
                )
                return count(cursor)

    def prepared_cursor(self) -> Any:
        # Django's cursors bind client-side: every statement reaches the server as new
        # text and is parsed and planned again. A server-binding cursor sends the same
        # text each time, which psycopg prepares (prepare_threshold) and the server
        # plans once. Wrapped by Django's CursorWrapper: errors are mapped as usual.
        connection = self.connection
        connection.ensure_connection()
        return CursorWrapper(psycopg.Cursor(connection.connection), connection)

    def lock_register_breaks(self, cursor: Any, device_pks: Sequence[int]) -> None:
        # Two batches of one device committing at once would each miss the other's rows
        # (and a step between them). Taken after the batch's own writes and held to its
        # commit, so the later batch's window sees the earlier one; only capacity rows
        # are written after it, so the lock order is always the same. (SQLite has one
        # writer at a time anyway.) Taken in device order: two runs never wait on each
        # other crosswise.
        keys = sorted({pk & 0x7FFFFFFF for pk in device_pks})
        cursor.execute(_LOCK, [_LOCK_CLASS, keys])

    def join_each(self, relation: str, alias: str, condition: str) -> str:
        # A lateral subquery, kept one by OFFSET 0 (the planner would flatten it back
        # into a plain join): each row's device and range bound an index scan of its
        # own. As a join the plan depends on guesses (a JSON relation counts as 100 rows
        # whatever it holds): a small table was read whole for every chunk, and on
        # TimescaleDB, whose rollups are continuous aggregates, every device's samples
        # since the watermark were aggregated before any was matched to a row.
        return (
            f"CROSS JOIN LATERAL (SELECT * FROM {relation} {alias} WHERE {condition} OFFSET 0)"
            f" AS {alias}"
        )

    def epoch_sql(self, column: str) -> str:
        return f"date_part('epoch', {column})"

    def to_datetime(self, value: Any) -> datetime:
        return value  # psycopg returns timestamptz aware

    def rows_sql(self, param: str, columns: Sequence[tuple[str, str]]) -> str:
        kinds = {"int": "bigint", "ts": "timestamptz"}
        picked = ", ".join(
            f"(r.value->>{i})::{kinds[kind]} AS {name}" for i, (name, kind) in enumerate(columns)
        )
        return f"SELECT {picked} FROM jsonb_array_elements(%({param})s::jsonb) AS r"

    def rows_param(self, rows: Iterable[Sequence[int | datetime]]) -> str:
        # isoformat keeps the offset and every microsecond: the cast gives the instant back.
        return json.dumps(
            [[v.isoformat() if isinstance(v, datetime) else v for v in row] for row in rows]
        )

    def series_rows_sql(self, relation: str) -> str:
        # width_bucket() finds each row's bucket by binary search in the array: one
        # index range scan of the rollup, whatever the number of buckets.
        columns = ", ".join(f"r.{c}" for c in SERIES_COLUMNS)
        return f"""
        SELECT k, (%(bounds)s::timestamptz[])[k] AS lo, (%(bounds)s::timestamptz[])[k + 1] AS hi,
            {columns}
        FROM (
            SELECT width_bucket(r.bucket, %(bounds)s::timestamptz[]) AS k, {columns}
            FROM {relation} r
            WHERE r.device_id = %(device)s AND r.bucket >= %(first)s AND r.bucket < %(last)s
        ) r
        """

    def series_bounds(self, boundaries: list[datetime]) -> Any:
        # Packed by one struct call: psycopg's own dumping of thousands of datetimes
        # cost more than the statement.
        return pgarrays.timestamptz_array(boundaries)

    def series_cursor(self) -> Any:
        # A server-binding cursor (the boundaries are one binary array parameter) that
        # reads its rows in binary: parsing thousands of rows of text cost several times
        # the statement itself.
        connection = self.connection
        connection.ensure_connection()
        cursor = psycopg.Cursor(connection.connection)
        cursor.format = psycopg.pq.Format.BINARY
        for kind, dumper in pgarrays.DUMPERS.items():
            cursor.adapters.register_dumper(kind, dumper)
        return CursorWrapper(cursor, connection)

    def make_sample_hypertable(self, schema_editor: BaseDatabaseSchemaEditor) -> None:
        from telemetry.storage import timescale

        if timescale.usable(self.connection):
            timescale.make_sample_hypertable(schema_editor)


class PostgresTablesPlan(PostgresPlan):
    name = "postgres-tables"

    def insert_rows(
        self, device_pk: int, columns: Columns, *, owed_by: int | None = None, owed: bool = False
    ) -> int:
        if owed:
            sql, extra = _INSERT_WITH_ROLLUPS_OWED, [owed_by]
        else:
            sql, extra = _INSERT_WITH_ROLLUPS, []
        return self._execute_binary(sql, device_pk, columns, inserted_count, extra)


@functools.cache
def native_placeholders(sql: str) -> str:
    """``sql`` with its psycopg placeholders (%s, %b) as PostgreSQL's $1, $2, ...; our
    statements hold no other percent sign."""
    numbers = itertools.count(1)
    return re.sub(r"%[sb]", lambda _: f"${next(numbers)}", sql)


def inserted_count(cursor: psycopg.Cursor) -> int:
    """The count the insert statements end with."""
    row = cursor.fetchone()
    if row is None:  # cannot happen: an aggregate without GROUP BY always gives a row
        raise RuntimeError("the insert returned no count")
    return row[0]


# The record of the steps owed, written from the rows that were new in the same
# statement; the token's id is the statement's last parameter.
OWED = (
    "owed AS (INSERT INTO telemetry_pendingbatch "
    "(device_id, token_id, oldest, newest, inserted, received_at) "
    "SELECT min(device_id), %s::bigint, min(ts), max(ts), count(*), statement_timestamp() "
    "FROM inserted HAVING count(*) > 0)"
)


# The stored series blocks whose span the new rows reach (telemetry.series_blocks), gone
# in the batch's own commit; the ingest steps drop them again with the device's series
# generation raised, for a block a read was computing meanwhile.
BLOCKS_REACHED = (
    "reached AS (DELETE FROM telemetry_seriesblock b "
    "USING (SELECT min(device_id) AS device_id, min(ts) AS oldest, max(ts) AS newest "
    "FROM inserted HAVING count(*) > 0) n "
    "WHERE b.device_id = n.device_id AND b.depends_until >= n.oldest "
    "AND (b.depends_from IS NULL OR b.depends_from <= n.newest))"
)


def _bucket(width_s: int) -> str:
    return f"date_bin(INTERVAL '{width_s} seconds', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00')"


def _merge(table: str, width_s: int) -> str:
    bucket = _bucket(width_s)
    names = ", ".join(ROLLUP_COLUMNS)
    # Only our own table names and constants are formatted in.
    # First and last values come from joining the rows at min(ts) and max(ts): one
    # aggregation pass instead of a sorted array per column. ts is unique in a batch.
    return f"""
    INSERT INTO {table} AS t ({names})
    SELECT a.device_id, a.bucket, a.first_ts, a.last_ts,
        f.energy_import_kwh, l.energy_import_kwh, f.energy_export_kwh, l.energy_export_kwh,
        a.sample_count, a.power_sum_w, a.min_power_w, a.max_power_w,
        l.average_power_15m_w, a.meter_peak_w, l.monthly_power_peak_ts
    FROM (
        SELECT device_id, {bucket} AS bucket, min(ts) AS first_ts, max(ts) AS last_ts,
            count(*) AS sample_count, sum(power_w) AS power_sum_w,
            min(power_w) AS min_power_w, max(power_w) AS max_power_w,
            max(monthly_power_peak_w) AS meter_peak_w
        FROM inserted GROUP BY device_id, {bucket}
    ) a
    JOIN inserted f ON f.ts = a.first_ts
    JOIN inserted l ON l.ts = a.last_ts
    ON CONFLICT (device_id, bucket) DO UPDATE SET
        first_ts = LEAST(t.first_ts, EXCLUDED.first_ts),
        last_ts = GREATEST(t.last_ts, EXCLUDED.last_ts),
        first_import_kwh = CASE WHEN EXCLUDED.first_ts < t.first_ts
            THEN EXCLUDED.first_import_kwh ELSE t.first_import_kwh END,
        first_export_kwh = CASE WHEN EXCLUDED.first_ts < t.first_ts
            THEN EXCLUDED.first_export_kwh ELSE t.first_export_kwh END,
        last_import_kwh = CASE WHEN EXCLUDED.last_ts > t.last_ts
            THEN EXCLUDED.last_import_kwh ELSE t.last_import_kwh END,
        last_export_kwh = CASE WHEN EXCLUDED.last_ts > t.last_ts
            THEN EXCLUDED.last_export_kwh ELSE t.last_export_kwh END,
        meter_avg_15m_w = CASE WHEN EXCLUDED.last_ts > t.last_ts
            THEN EXCLUDED.meter_avg_15m_w ELSE t.meter_avg_15m_w END,
        meter_peak_ts = CASE WHEN EXCLUDED.last_ts > t.last_ts
            THEN EXCLUDED.meter_peak_ts ELSE t.meter_peak_ts END,
        sample_count = t.sample_count + EXCLUDED.sample_count,
        power_sum_w = t.power_sum_w + EXCLUDED.power_sum_w,
        min_power_w = LEAST(t.min_power_w, EXCLUDED.min_power_w),
        max_power_w = GREATEST(t.max_power_w, EXCLUDED.max_power_w),
        meter_peak_w = GREATEST(t.meter_peak_w, EXCLUDED.meter_peak_w)
    """


def _insert_with_rollups(insert_sql: str, owed: bool) -> str:
    """The sample insert wrapped so the same statement merges its new rows into the
    rollups (and, with ``owed``, records the steps owed for them)."""
    returning = (
        " RETURNING device_id, ts, power_w, energy_import_kwh, energy_export_kwh, "
        "average_power_15m_w, monthly_power_peak_w, monthly_power_peak_ts"
    )
    return (
        f"WITH inserted AS ({insert_sql}{returning}), "
        f"quarters AS ({_merge('telemetry_quarter', 900)}), "
        f"hours AS ({_merge('telemetry_hour', 3600)}) "
        + (f", {OWED}, {BLOCKS_REACHED} " if owed else "")
        + "SELECT count(*) FROM inserted"
    )


_INSERT_WITH_ROLLUPS = _insert_with_rollups(SAMPLE_INSERT, owed=False)
_INSERT_WITH_ROLLUPS_OWED = _insert_with_rollups(SAMPLE_INSERT, owed=True)
