"""The storage interface every plan implements, and what two of the three share.

A plan is how one database keeps samples and their 15-minute and hourly rollups
(telemetry.models.Rollup): TimescaleDB continuous aggregates, PostgreSQL tables merged
by the insert itself, or SQLite tables recomputed after it. Callers hold no knowledge
of which: ingest, the demo's bulk load, the capacity queries and the migrations ask
``telemetry.storage.plan_for()`` and call its methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar

from django.db import connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

Columns = list[list[Any] | None]

_EXPORT_COLUMNS = ("first_export_kwh", "last_export_kwh")


# The stored series blocks (telemetry.series_blocks) whose span of samples reaches a
# (device, oldest, newest) row of {spans}: what new samples make stale.
BLOCK_SPAN_COLUMNS = (("device", "int"), ("oldest", "ts"), ("newest", "ts"))
_DELETE_BLOCKS_REACHED = """
WITH spans AS ({spans})
DELETE FROM telemetry_seriesblock
WHERE device_id IN (SELECT device FROM spans) AND EXISTS (
    SELECT 1 FROM spans s WHERE s.device = telemetry_seriesblock.device_id
        AND telemetry_seriesblock.depends_until >= s.oldest
        AND (telemetry_seriesblock.depends_from IS NULL
            OR telemetry_seriesblock.depends_from <= s.newest))
"""


def timestamps(columns: Columns) -> list[datetime]:
    """A batch's first column, its sample times: ts is a required wire field, so
    validation (and the demo's history) always fill it."""
    ts = columns[0]
    if ts is None:
        raise ValueError("a batch's first column holds its sample times, not None")
    return ts


class StoragePlan(ABC):
    """One database's way of storing samples and keeping their rollups."""

    name: ClassVar[str]
    # True where the rollups are tables written by ingest (so a test or benchmark that
    # empties the samples must empty them too); False where the database derives them.
    ingest_keeps_rollups: ClassVar[bool] = True

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.alias!r}>"

    @property
    def connection(self) -> BaseDatabaseWrapper:
        # Looked up on every use: Django's connections are per thread.
        return connections[self.alias]

    # --- ingest -----------------------------------------------------------------------

    # True where insert_rows is one statement: atomic by itself, so in autocommit it
    # needs no transaction around it (two round trips fewer per batch).
    insert_is_one_statement: ClassVar[bool] = False

    def insert_batch(self, device_pk: int, columns: Columns, token_pk: int | None = None) -> int:
        """Insert one batch given as columns (wire.SAMPLE_FIELDS order, None for a field
        no sample has) with its rollups, and, when rows were new, the record of the
        steps owed for them (telemetry.models.PendingBatch, sent by token ``token_pk``),
        all in one commit; returns how many rows were new. telemetry.pipeline runs the
        owed steps."""
        if not columns[0]:
            return 0
        if self.insert_is_one_statement and self.connection.get_autocommit():
            return self.insert_rows(device_pk, columns, owed_by=token_pk, owed=True)
        with transaction.atomic(using=self.alias):
            return self.insert_rows(device_pk, columns, owed_by=token_pk, owed=True)

    def refresh_before_steps(self, oldest: datetime, newest: datetime) -> None:
        """Bring what the owed steps read over [oldest, newest] up to date; runs outside
        any transaction, before them."""
        return

    @abstractmethod
    def insert_rows(
        self, device_pk: int, columns: Columns, *, owed_by: int | None = None, owed: bool = False
    ) -> int:
        """The samples (ON CONFLICT (device, ts) DO NOTHING), where ingest keeps them
        their rollups, and with ``owed`` a PendingBatch row when rows were new, in the
        caller's transaction; returns how many rows were new."""

    def insert_history(self, device_pk: int, columns: Columns) -> int:
        """Months of history at once (demo.bulkload): samples, rollups and register
        breaks, no steps owed (the caller rebuilds capacity once)."""
        if not columns[0]:
            return 0
        from telemetry import segments

        with transaction.atomic(using=self.alias):
            inserted = self.insert_rows(device_pk, columns)
            if inserted:
                segments.refresh_breaks(device_pk, min(columns[0]), max(columns[0]))
        return inserted

    def refresh(self, oldest: datetime, newest: datetime) -> None:
        """Bring the rollups over [oldest, newest] up to date with the stored samples.
        Where ingest writes them they are current once the batch committed."""
        return

    def lock_register_breaks(self, cursor: Any, device_pks: Sequence[int]) -> None:
        """Serialise the register-break refresh of these devices until the commit."""
        return  # one writer at a time: nothing to serialise

    def prepared_cursor(self) -> Any:
        """A Django cursor for statements run over and over with new parameters (the
        ingest steps): where the database can, it binds them server-side so each is
        planned once per connection. Use as a context manager, like connection.cursor()."""
        return self.connection.cursor()

    # --- dialect ----------------------------------------------------------------------

    @abstractmethod
    def epoch_sql(self, column: str) -> str:
        """SQL: seconds since the epoch of a timestamp column or expression."""

    @abstractmethod
    def to_datetime(self, value: Any) -> datetime:
        """An aware datetime from a timestamp a raw SQL query returned."""

    @abstractmethod
    def rows_sql(self, param: str, columns: Sequence[tuple[str, str]]) -> str:
        """SQL: a relation of the rows passed as %(param)s (``rows_param``), one column
        per (name, kind) in that order, kind ``int`` or ``ts``: how the ingest steps do
        one statement for a chunk of devices instead of one per device."""

    @abstractmethod
    def rows_param(self, rows: Iterable[Sequence[int | datetime]]) -> str:
        """The %(param)s of ``rows_sql`` for these rows (ints and aware datetimes)."""

    def delete_blocks_reached(
        self, cursor: Any, spans: Sequence[tuple[int, datetime, datetime]]
    ) -> int:
        """Delete the series blocks each (device, oldest, newest) span reaches; how many."""
        cursor.execute(
            _DELETE_BLOCKS_REACHED.format(spans=self.rows_sql("spans", BLOCK_SPAN_COLUMNS)),
            {"spans": self.rows_param(spans)},
        )
        return int(cursor.rowcount)

    def join_each(self, relation: str, alias: str, condition: str) -> str:
        """SQL: a join of ``relation`` as ``alias`` to the rows before it, ``condition``
        naming both (each row of ``rows_sql`` joined to its own device's rollup rows)."""
        return f"JOIN {relation} {alias} ON {condition}"

    # --- reads ------------------------------------------------------------------------

    def newest_sample_bound(self, device_pk: int) -> datetime | None:
        """A moment at or before the device's newest sample, to read that sample from
        on; None where an unbounded read of it is as cheap (an index's last entry)."""
        return None

    # --- series -----------------------------------------------------------------------

    @abstractmethod
    def series_rows_sql(self, relation: str) -> str:
        """SQL: the rows of a rollup ``relation`` of device %(device)s inside calendar
        bucket boundaries (days, weeks, months), each with ``k``, the 1-based number of
        the bucket holding it, and that bucket's ``lo`` and ``hi``: columns k, lo, hi,
        then telemetry.storage.rollups.SERIES_COLUMNS. The boundaries (%(bounds)s, from
        %(first)s to %(last)s) come from Python, where the local-calendar rules live
        once; only matching rows to them differs between databases."""

    @abstractmethod
    def series_bounds(self, boundaries: list[datetime]) -> Any:
        """The %(bounds)s parameter of series_rows_sql for these boundaries."""

    def series_cursor(self) -> Any:
        """The cursor the series statement runs on (one long statement, new bounds each
        time)."""
        return self.connection.cursor()

    # --- migrations -------------------------------------------------------------------

    def make_sample_hypertable(self, schema_editor: BaseDatabaseSchemaEditor) -> None:
        """Sample becomes a compressed hypertable where TimescaleDB can be used."""
        return  # never, but on PostgreSQL

    def require_nullable_column_support(self, schema_editor: BaseDatabaseSchemaEditor) -> None:
        """Refuse, in one line, a column change the database cannot make."""
        return  # only an old TimescaleDB refuses one

    def create_rollup_relations(self, apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
        for name in ("QuarterRollup", "HourRollup"):
            schema_editor.create_model(apps.get_model("telemetry", name))

    def drop_rollup_relations(self, apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
        for name in ("HourRollup", "QuarterRollup"):
            schema_editor.delete_model(apps.get_model("telemetry", name))

    def alter_export_columns(
        self, apps: Any, schema_editor: BaseDatabaseSchemaEditor, null: bool
    ) -> None:
        """Make the rollup tables' export columns nullable (or not again)."""
        for name in ("QuarterRollup", "HourRollup"):
            model = apps.get_model("telemetry", name)
            for column in _EXPORT_COLUMNS:
                current = model._meta.get_field(column)
                # Nullable on one side of the change: typed as the nullable column.
                other: models.FloatField[float | None, float | None] = models.FloatField(
                    null=not current.null
                )
                other.set_attributes_from_name(column)
                other.model = model
                old, new = (other, current) if null else (current, other)
                schema_editor.alter_field(model, old, new)

    # --- retention --------------------------------------------------------------------

    def prune_samples(self, before: datetime, batch_rows: int = 0) -> tuple[int, datetime]:
        """Delete the raw samples older than ``before``, leaving the rollups, the capacity
        tables and the register breaks as they are (telemetry.retention). Returns how
        many were deleted, and the moment before which no raw sample is left.

        A device and a bounded time range (at most ``batch_rows`` rows, default
        PRUNE_BATCH_ROWS) at a time, each its own transaction, so neither a lock nor the
        WAL grows with the backlog.
        """
        connection = self.connection
        adapt = connection.ops.adapt_datetimefield_value
        limit = batch_rows or PRUNE_BATCH_ROWS
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM telemetry_device ORDER BY id")
            devices = [row[0] for row in cursor.fetchall()]
        deleted = 0
        for device_pk in devices:
            while True:
                with transaction.atomic(using=self.alias), connection.cursor() as cursor:
                    # The batch ends at the oldest sample beyond its first `limit` rows.
                    cursor.execute(_PRUNE_UPPER, [device_pk, adapt(before), limit])
                    row = cursor.fetchone()
                    upper = before if row is None else self.to_datetime(row[0])
                    cursor.execute(_PRUNE_DELETE, [device_pk, adapt(upper)])
                    deleted += cursor.rowcount
                if row is None:
                    break
        return deleted, before

    def tune_sample_storage(
        self,
        schema_editor: BaseDatabaseSchemaEditor,
        chunk_interval: str,
        compress_after: str,
        refresh_start: str | None,
    ) -> None:
        """Chunk interval, compression delay and the aggregates' refresh window, where
        samples are a hypertable (migration 0008)."""
        return  # only TimescaleDB has chunks


# Rows one prune transaction deletes at most (StoragePlan.prune_samples): hours of one
# device at 2 s polling.
PRUNE_BATCH_ROWS = 20_000
_PRUNE_UPPER = (
    "SELECT ts FROM telemetry_sample WHERE device_id = %s AND ts < %s ORDER BY ts LIMIT 1 OFFSET %s"
)
_PRUNE_DELETE = "DELETE FROM telemetry_sample WHERE device_id = %s AND ts < %s"
