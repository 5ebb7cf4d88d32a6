"""The 15-minute and hourly rollup relations: created by migrations, kept current here.

Three ways to the same columns (telemetry.models.Rollup):
- TimescaleDB: continuous aggregates (hourly built on the 15-minute one) with real-time
  aggregation, refreshed by policies. Ingest does nothing extra.
- PostgreSQL without it: tables merged in the same statement that inserts the batch,
  from exactly the rows that were new (``RETURNING``), so a retried or overlapping
  batch never counts twice and late, out-of-order data lands in the right bucket.
- SQLite: the touched buckets are recomputed from the raw samples after the insert, in
  the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import OperationalError, connection

from telemetry.timegrid import HOUR, QUARTER, bucket_start

logger = logging.getLogger(__name__)

RELATIONS = {"telemetry_quarter": QUARTER, "telemetry_hour": HOUR}
ROLLUP_COLUMNS = (
    "device_id",
    "bucket",
    "first_ts",
    "last_ts",
    "first_import_kwh",
    "last_import_kwh",
    "first_export_kwh",
    "last_export_kwh",
    "sample_count",
    "power_sum_w",
    "min_power_w",
    "max_power_w",
    "meter_avg_15m_w",
    "meter_peak_w",
    "meter_peak_ts",
)


# --- TimescaleDB ------------------------------------------------------------------

_AGGREGATES_FROM_SAMPLES = """
    min(ts) AS first_ts, max(ts) AS last_ts,
    first(energy_import_kwh, ts) AS first_import_kwh,
    last(energy_import_kwh, ts) AS last_import_kwh,
    first(energy_export_kwh, ts) AS first_export_kwh,
    last(energy_export_kwh, ts) AS last_export_kwh,
    count(*) AS sample_count, sum(power_w) AS power_sum_w,
    min(power_w) AS min_power_w, max(power_w) AS max_power_w,
    last(average_power_15m_w, ts) AS meter_avg_15m_w,
    max(monthly_power_peak_w) AS meter_peak_w,
    last(monthly_power_peak_ts, ts) AS meter_peak_ts
"""

_AGGREGATES_FROM_QUARTERS = """
    min(first_ts) AS first_ts, max(last_ts) AS last_ts,
    first(first_import_kwh, first_ts) AS first_import_kwh,
    last(last_import_kwh, last_ts) AS last_import_kwh,
    first(first_export_kwh, first_ts) AS first_export_kwh,
    last(last_export_kwh, last_ts) AS last_export_kwh,
    sum(sample_count)::bigint AS sample_count, sum(power_sum_w) AS power_sum_w,
    min(min_power_w) AS min_power_w, max(max_power_w) AS max_power_w,
    last(meter_avg_15m_w, last_ts) AS meter_avg_15m_w,
    max(meter_peak_w) AS meter_peak_w,
    last(meter_peak_ts, last_ts) AS meter_peak_ts
"""

TIMESCALE_DDL = [
    "CREATE MATERIALIZED VIEW telemetry_quarter "
    "WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
    "SELECT device_id, time_bucket(INTERVAL '15 minutes', ts) AS bucket,"
    + _AGGREGATES_FROM_SAMPLES
    + "FROM telemetry_sample GROUP BY device_id, time_bucket(INTERVAL '15 minutes', ts) "
    "WITH NO DATA",
    "CREATE MATERIALIZED VIEW telemetry_hour "
    "WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
    "SELECT device_id, time_bucket(INTERVAL '1 hour', bucket) AS bucket,"
    + _AGGREGATES_FROM_QUARTERS
    + "FROM telemetry_quarter GROUP BY device_id, time_bucket(INTERVAL '1 hour', bucket) "
    "WITH NO DATA",
    # start_offset NULL: late data of any age is picked up at the next run (a backlog an
    # edge uploads after days offline). Only invalidated ranges are recomputed.
    "SELECT add_continuous_aggregate_policy('telemetry_quarter', start_offset => NULL, "
    "end_offset => INTERVAL '15 minutes', schedule_interval => INTERVAL '1 minute')",
    "SELECT add_continuous_aggregate_policy('telemetry_hour', start_offset => NULL, "
    "end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '5 minutes')",
]

# Real-time aggregation covers only buckets after the aggregate's watermark; older data
# waits for the refresh policy. A batch reaching that far back (a backlog after an
# outage, a bulk import) refreshes its own window at once so reads stay exact.
REFRESH_IF_OLDER_THAN = timedelta(hours=2)


def timescale_refresh(oldest: datetime, newest: datetime) -> None:
    if connection.in_atomic_block:
        return  # refresh_continuous_aggregate cannot run in a transaction; the policy will
    for table, width in RELATIONS.items():
        start, end = bucket_start(oldest, width), bucket_start(newest, width) + width
        try:
            with connection.cursor() as cursor:
                cursor.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", [table, start, end])
        except OperationalError as exc:
            # A policy run refreshing the same window is the usual cause; it, or the next
            # run, covers these rows. The samples are stored either way: never fail ingest.
            logger.info("refresh of %s deferred to its policy: %s", table, exc)


# --- PostgreSQL without TimescaleDB --------------------------------------------------


def _pg_bucket(width_s: int) -> str:
    return f"date_bin(INTERVAL '{width_s} seconds', ts, TIMESTAMPTZ '2000-01-01 00:00:00+00')"


def _pg_merge(table: str, width_s: int) -> str:
    bucket = _pg_bucket(width_s)
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


def pg_insert_with_rollups(insert_sql: str) -> str:
    """Wrap the sample insert so the same statement merges its new rows into the rollups."""
    returning = (
        " RETURNING device_id, ts, power_w, energy_import_kwh, energy_export_kwh, "
        "average_power_15m_w, monthly_power_peak_w, monthly_power_peak_ts"
    )
    return (
        f"WITH inserted AS ({insert_sql}{returning}), "
        f"quarters AS ({_pg_merge('telemetry_quarter', 900)}), "
        f"hours AS ({_pg_merge('telemetry_hour', 3600)}) "
        "SELECT count(*) FROM inserted"
    )


# --- SQLite --------------------------------------------------------------------------

SAMPLE_INPUT_COLUMNS = (
    "ts",
    "power_w",
    "energy_import_kwh",
    "energy_export_kwh",
    "average_power_15m_w",
    "monthly_power_peak_w",
    "monthly_power_peak_ts",
)


def aggregate_bucket(device_pk: int, bucket: datetime, rows: Sequence[Sequence[Any]]) -> list:
    """One rollup row from samples in time order (the columns of SAMPLE_INPUT_COLUMNS)."""
    first, last = rows[0], rows[-1]
    powers = [r[1] for r in rows]
    peaks = [r[5] for r in rows if r[5] is not None]
    return [
        device_pk,
        bucket,
        first[0],
        last[0],
        first[2],
        last[2],
        first[3],
        last[3],
        len(rows),
        sum(powers),
        min(powers),
        max(powers),
        last[4],
        max(peaks) if peaks else None,
        last[6],
    ]


# A run of touched buckets is read with one query; runs longer than this are split so
# a sparse batch over weeks does not read weeks of samples in one statement.
MAX_RUN_BUCKETS = 96


def bucket_runs(starts: Iterable[datetime], width: timedelta) -> list[tuple[datetime, datetime]]:
    """Consecutive bucket starts joined into [start, end) ranges of at most MAX_RUN_BUCKETS."""
    runs: list[tuple[datetime, datetime]] = []
    for start in sorted(set(starts)):
        if runs:
            run_start, run_end = runs[-1]
            if run_end == start and (run_end - run_start) < width * MAX_RUN_BUCKETS:
                runs[-1] = (run_start, start + width)
                continue
        runs.append((start, start + width))
    return runs


def sqlite_refresh(device_pk: int, timestamps: Iterable[datetime]) -> None:
    """Recompute every quarter and hour the given sample times fall in, from raw rows.

    Touched buckets that follow each other are one run: one read, one delete and one
    insert per run, so a long backlog costs a few statements instead of three per
    bucket. The samples are streamed in time order and folded bucket by bucket, so
    memory holds one bucket's samples at a time.
    """
    from telemetry.models import HourRollup, QuarterRollup, Sample

    ts_list = list(timestamps)
    for model, width in ((QuarterRollup, QUARTER), (HourRollup, HOUR)):
        table = model._meta.db_table
        for run_start, run_end in bucket_runs((bucket_start(ts, width) for ts in ts_list), width):
            samples = (
                Sample.objects.filter(device_id=device_pk, ts__gte=run_start, ts__lt=run_end)
                .order_by("ts")
                .values_list(*SAMPLE_INPUT_COLUMNS)
            )
            rollups = []
            current, rows = None, []
            for row in samples.iterator(chunk_size=2000):
                bucket = bucket_start(row[0], width)
                if bucket != current and rows:
                    rollups.append(aggregate_bucket(device_pk, current, rows))
                    rows = []
                current = bucket
                rows.append(row)
            if rows:
                rollups.append(aggregate_bucket(device_pk, current, rows))
            with connection.cursor() as cursor:
                cursor.execute(
                    f"DELETE FROM {table} WHERE device_id = %s AND bucket >= %s AND bucket < %s",
                    [
                        device_pk,
                        connection.ops.adapt_datetimefield_value(run_start),
                        connection.ops.adapt_datetimefield_value(run_end),
                    ],
                )
            model.objects.bulk_create(
                [model(**dict(zip(ROLLUP_COLUMNS, values, strict=True))) for values in rollups]
            )


_MAINTAINED: dict[str, bool] = {}


def maintained_by_ingest() -> bool:
    """True where the rollups are tables the ingest path must keep current."""
    if connection.vendor != "postgresql":
        return True
    key = f"{connection.settings_dict['HOST']}:{connection.settings_dict['NAME']}"
    if key not in _MAINTAINED:
        with connection.cursor() as cursor:
            cursor.execute("SELECT relkind FROM pg_class WHERE relname = 'telemetry_quarter'")
            row = cursor.fetchone()
        # 'r' is a table; a continuous aggregate is a view ('v') kept by TimescaleDB.
        _MAINTAINED[key] = row is not None and row[0] == "r"
    return _MAINTAINED[key]


# --- migrations -------------------------------------------------------------------------


def create_rollup_relations(apps, schema_editor) -> None:
    from telemetry.timescale import timescaledb_enabled

    connection_ = schema_editor.connection
    if timescaledb_enabled(connection_):
        for statement in TIMESCALE_DDL:
            schema_editor.execute(statement)
        return
    for name in ("QuarterRollup", "HourRollup"):
        schema_editor.create_model(apps.get_model("telemetry", name))


def drop_rollup_relations(apps, schema_editor) -> None:
    from telemetry.timescale import is_hypertable

    if is_hypertable(schema_editor.connection, "telemetry_sample"):
        schema_editor.execute("DROP MATERIALIZED VIEW IF EXISTS telemetry_hour")
        schema_editor.execute("DROP MATERIALIZED VIEW IF EXISTS telemetry_quarter")
        return
    for name in ("HourRollup", "QuarterRollup"):
        schema_editor.delete_model(apps.get_model("telemetry", name))


_EXPORT_COLUMNS = ("first_export_kwh", "last_export_kwh")


def _alter_export_columns(apps, schema_editor, null: bool) -> None:
    """The rollup tables' export columns, where they are tables (not continuous
    aggregates, whose columns follow their query)."""
    from django.db import models

    from telemetry.timescale import is_hypertable

    if is_hypertable(schema_editor.connection, "telemetry_sample"):
        return
    for name in ("QuarterRollup", "HourRollup"):
        model = apps.get_model("telemetry", name)
        for column in _EXPORT_COLUMNS:
            current = model._meta.get_field(column)
            other = models.FloatField(null=not current.null)
            other.set_attributes_from_name(column)
            other.model = model
            old, new = (other, current) if null else (current, other)
            schema_editor.alter_field(model, old, new)


def allow_null_export(apps, schema_editor) -> None:
    _alter_export_columns(apps, schema_editor, null=True)


def require_export(apps, schema_editor) -> None:
    _alter_export_columns(apps, schema_editor, null=False)
