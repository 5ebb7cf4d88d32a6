"""TimescaleDB: Sample is a compressed hypertable and the rollups are continuous
aggregates (hourly built on the 15-minute one) with real-time aggregation, refreshed by
policies. Ingest inserts the samples only, and refreshes a window itself when a batch
is older than the aggregates' watermark.

Whether this database can use the extension is asked, never tried: ``CREATE EXTENSION
timescaledb`` on a server that does not preload the library is FATAL (it drops the
connection).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.utils import timezone

from telemetry.storage.base import Columns
from telemetry.storage.postgres import (
    BLOCKS_REACHED,
    OWED,
    SAMPLE_INSERT,
    PostgresPlan,
    inserted_count,
)
from telemetry.storage.rollups import RELATIONS
from telemetry.timegrid import bucket_start

logger = logging.getLogger(__name__)

SAMPLE_TABLE = "telemetry_sample"
# Chosen by bench/storage.py (docs/PERFORMANCE.md, "Storage per device-year"). Shorter
# chunks shorten the uncompressed tail but multiply the chunks every read not bounded in
# time must plan; compressing two days after a chunk ends keeps the live chunk and a
# recent backlog uncompressed, and older backlogs still go in (into compressed chunks).
CHUNK_INTERVAL = "7 days"
COMPRESS_AFTER = "2 days"
# How far back the aggregates' refresh policies look (migration 0008): less than the
# shortest raw-sample retention (13 months, RAW_SAMPLE_RETENTION_MONTHS), because a
# refresh over a range whose raw chunks were dropped empties its buckets. Late data older
# than this refreshes its own window at ingest (REFRESH_IF_OLDER_THAN).
AGGREGATE_REFRESH_START = "12 months"
# Dropping NOT NULL on a hypertable with compression enabled is refused before 2.18
# ("operation not supported on hypertables that have compression enabled").
NULLABLE_COLUMN_MIN_VERSION = (2, 18)
# Real-time aggregation covers only buckets after the aggregate's watermark; older data
# waits for the refresh policy. A batch reaching that far back (a backlog after an
# outage, a bulk import) refreshes its own window at once so reads stay exact.
# The quarter aggregate's policy materialises up to 15 minutes back (its end_offset), so
# its watermark can be that far behind: anything older may sit below it, unseen.
REFRESH_IF_OLDER_THAN = timedelta(minutes=15)


_INSERT_OWED = (
    f"WITH inserted AS ({SAMPLE_INSERT} RETURNING device_id, ts), {OWED}, {BLOCKS_REACHED} "
    "SELECT count(*) FROM inserted"
)


class TimescaleRequired(RuntimeError):
    pass


# --- detection (PostgreSQL connections only) ---------------------------------------------


def _loadable(cursor: Any) -> bool:
    cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    if cursor.fetchone():
        return True
    cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    if not cursor.fetchone():
        return False
    cursor.execute("SELECT current_setting('shared_preload_libraries')")
    preload = cursor.fetchone()[0] or ""
    return "timescaledb" in [lib.strip() for lib in preload.split(",")]


def usable(connection: BaseDatabaseWrapper) -> bool:
    """True when the extension is (or can be) created here and settings allow it."""
    if settings.TIMESCALEDB == "off":
        return False
    with connection.cursor() as cursor:
        found = _loadable(cursor)
    if not found and settings.TIMESCALEDB == "require":
        raise TimescaleRequired(
            "TIMESCALEDB=require but the server cannot load the timescaledb extension "
            "(install it and add it to shared_preload_libraries)"
        )
    return found


def is_hypertable(connection: BaseDatabaseWrapper, table: str = SAMPLE_TABLE) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return False
        cursor.execute(
            "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
            [table],
        )
        return cursor.fetchone() is not None


def make_sample_hypertable(schema_editor: BaseDatabaseSchemaEditor) -> None:
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    schema_editor.execute(
        f"SELECT create_hypertable('{SAMPLE_TABLE}', 'ts', "
        f"chunk_time_interval => INTERVAL '{CHUNK_INTERVAL}', "
        "migrate_data => true, if_not_exists => true)"
    )
    # Segmenting by device keeps one household's rows together in a compressed chunk,
    # which is how every query reads them.
    schema_editor.execute(
        f"ALTER TABLE {SAMPLE_TABLE} SET (timescaledb.compress, "
        "timescaledb.compress_segmentby = 'device_id', "
        "timescaledb.compress_orderby = 'ts DESC')"
    )
    schema_editor.execute(
        f"SELECT add_compression_policy('{SAMPLE_TABLE}', INTERVAL '{COMPRESS_AFTER}', "
        "if_not_exists => true)"
    )


# --- the continuous aggregates -------------------------------------------------------------

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

AGGREGATE_DDL = [
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


class TimescalePlan(PostgresPlan):
    name = "timescale"
    ingest_keeps_rollups = False

    def insert_rows(
        self, device_pk: int, columns: Columns, *, owed_by: int | None = None, owed: bool = False
    ) -> int:
        if not owed:
            return self._execute_binary(
                SAMPLE_INSERT, device_pk, columns, lambda cursor: cursor.rowcount
            )
        return self._execute_binary(_INSERT_OWED, device_pk, columns, inserted_count, [owed_by])

    def newest_sample_bound(self, device_pk: int) -> datetime | None:
        # An unbounded newest-sample read plans every chunk of the hypertable (tens of
        # ms once they are compressed). The hourly aggregate's newest bucket is built
        # from stored samples, so it is at or before the newest one, and a read from it
        # on plans its chunk only.
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT max(bucket) FROM telemetry_hour WHERE device_id = %s", [device_pk]
            )
            (bucket,) = cursor.fetchone()
        return bucket

    def refresh_before_steps(self, oldest: datetime, newest: datetime) -> None:
        # Real-time aggregation covers what is newer than the aggregates' watermark; an
        # older batch (a backlog) needs its window refreshed before the steps read it.
        # Strict: the steps would read stale aggregates, so a refresh that fails (a lock
        # held by a policy run, a database going away) raises and the batch stays owed
        # for the next run.
        if oldest < timezone.now() - REFRESH_IF_OLDER_THAN and not self.connection.in_atomic_block:
            self._refresh(oldest, newest)

    def refresh(self, oldest: datetime, newest: datetime) -> None:
        if self.connection.in_atomic_block:
            return  # refresh_continuous_aggregate cannot run in a transaction; the policy will
        for table, width in RELATIONS.items():
            try:
                self._refresh_one(table, width, oldest, newest)
            except OperationalError as exc:
                # A policy run refreshing the same window is the usual cause; it, or the
                # next run, covers these rows. The samples are stored either way: never
                # fail ingest.
                logger.info("refresh of %s deferred to its policy: %s", table, exc)

    def _refresh(self, oldest: datetime, newest: datetime) -> None:
        for table, width in RELATIONS.items():
            self._refresh_one(table, width, oldest, newest)

    def _refresh_one(
        self, table: str, width: timedelta, oldest: datetime, newest: datetime
    ) -> None:
        # Closed buckets only: a refresh moves the aggregate's watermark to the end of
        # the window, and real-time aggregation reads raw samples only after it. Had it
        # materialised the running quarter (or hour), every device's samples arriving in
        # it afterwards would be invisible until the policy's next run (a demo's or a
        # backlog's last batch ends now). The running bucket stays real-time.
        start = bucket_start(oldest, width)
        end = min(bucket_start(newest, width) + width, bucket_start(timezone.now(), width))
        if start >= end:
            return
        with self.connection.cursor() as cursor:
            cursor.execute("CALL refresh_continuous_aggregate(%s, %s, %s)", [table, start, end])

    def require_nullable_column_support(self, schema_editor: BaseDatabaseSchemaEditor) -> None:
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
            (version,) = cursor.fetchone()
        found = tuple(int(part) for part in version.split("-")[0].split(".")[:2])
        if found < NULLABLE_COLUMN_MIN_VERSION:
            wanted = ".".join(map(str, NULLABLE_COLUMN_MIN_VERSION))
            raise TimescaleRequired(
                f"TimescaleDB {version} cannot make a column of the compressed sample table "
                f"nullable: update the extension to {wanted} or later (a newer image, then "
                "ALTER EXTENSION timescaledb UPDATE; docs/DEPLOY.md, Upgrades) and migrate again"
            )

    def create_rollup_relations(self, apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
        for statement in AGGREGATE_DDL:
            schema_editor.execute(statement)

    def drop_rollup_relations(self, apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
        schema_editor.execute("DROP MATERIALIZED VIEW IF EXISTS telemetry_hour")
        schema_editor.execute("DROP MATERIALIZED VIEW IF EXISTS telemetry_quarter")

    def alter_export_columns(
        self, apps: Any, schema_editor: BaseDatabaseSchemaEditor, null: bool
    ) -> None:
        """A continuous aggregate's columns follow its query: nothing to alter."""

    def insert_history(self, device_pk: int, columns: Columns) -> int:
        """As every plan, then the aggregates over the loaded window: the refresh
        policies look back only AGGREGATE_REFRESH_START, so older history they would
        never materialize, and once the watermark passed it, it would read as empty."""
        from telemetry.storage.base import timestamps

        inserted = super().insert_history(device_pk, columns)
        if inserted:
            ts = timestamps(columns)
            self.refresh_before_steps(min(ts), max(ts))
        return inserted

    def prune_samples(self, before: datetime, batch_rows: int = 0) -> tuple[int, datetime]:
        """Whole chunks only: drop_chunks removes the chunks that end at or before
        ``before`` (a file each: no row deletes, nothing to vacuum). The chunk that
        straddles ``before`` stays until a later run can drop it whole; deleting its old
        rows would cost a decompression and mark their range for the aggregates' refresh.

        Dropping chunks marks their range as changed for the continuous aggregates too:
        a refresh over it would empty those buckets. No refresh reaches there: the
        policies look back AGGREGATE_REFRESH_START, less than the shortest retention,
        and ingest refuses samples older than the horizon (telemetry.validation), so no
        batch refreshes its own window there either.
        """
        from django.db import transaction

        with transaction.atomic(using=self.alias), self.connection.cursor() as cursor:
            cursor.execute(_LAST_DROPPABLE, [SAMPLE_TABLE, before])
            (end,) = cursor.fetchone()
            deleted = 0
            if end is not None:
                cursor.execute(f"SELECT count(*) FROM {SAMPLE_TABLE} WHERE ts < %s", [end])
                (deleted,) = cursor.fetchone()
                cursor.execute(
                    "SELECT count(*) FROM drop_chunks(%s::regclass, older_than => %s)",
                    [SAMPLE_TABLE, before],
                )
            cursor.execute(_OLDEST_CHUNK, [SAMPLE_TABLE])
            (oldest,) = cursor.fetchone()
        return deleted, before if oldest is None else min(before, oldest)

    def tune_sample_storage(
        self,
        schema_editor: BaseDatabaseSchemaEditor,
        chunk_interval: str,
        compress_after: str,
        refresh_start: str | None,
    ) -> None:
        # New chunks only: the existing ones keep their width.
        schema_editor.execute(
            "SELECT set_chunk_time_interval(%s::regclass, %s::interval)",
            [SAMPLE_TABLE, chunk_interval],
        )
        schema_editor.execute(
            "SELECT remove_compression_policy(%s::regclass, if_exists => true)", [SAMPLE_TABLE]
        )
        schema_editor.execute(
            "SELECT add_compression_policy(%s::regclass, %s::interval)",
            [SAMPLE_TABLE, compress_after],
        )
        for view, end_offset, schedule in _AGGREGATE_POLICIES:
            schema_editor.execute(
                "SELECT remove_continuous_aggregate_policy(%s::regclass, if_exists => true)",
                [view],
            )
            schema_editor.execute(
                "SELECT add_continuous_aggregate_policy(%s::regclass, "
                "start_offset => %s::interval, end_offset => %s::interval, "
                "schedule_interval => %s::interval)",
                [view, refresh_start, end_offset, schedule],
            )


_LAST_DROPPABLE = (
    "SELECT max(range_end) FROM timescaledb_information.chunks "
    "WHERE hypertable_name = %s AND range_end <= %s"
)
_OLDEST_CHUNK = (
    "SELECT min(range_start) FROM timescaledb_information.chunks WHERE hypertable_name = %s"
)
# The aggregates' policies as AGGREGATE_DDL creates them: view, end offset, schedule.
_AGGREGATE_POLICIES = (
    ("telemetry_quarter", "15 minutes", "1 minute"),
    ("telemetry_hour", "1 hour", "5 minutes"),
)
