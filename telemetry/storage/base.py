"""The storage interface every plan implements, and what two of the three share.

A plan is how one database keeps samples and their 15-minute and hourly rollups
(telemetry.models.Rollup): TimescaleDB continuous aggregates, PostgreSQL tables merged
by the insert itself, or SQLite tables recomputed after it. Callers hold no knowledge
of which: ingest, the demo's bulk load, the capacity queries and the migrations ask
``telemetry.storage.plan_for()`` and call its methods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from django.db import connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

# after_insert(oldest, newest, inserted): the ingest steps (telemetry.pipeline).
AfterInsert = Callable[[datetime, datetime, int], None]
Columns = list[list[Any] | None]

_EXPORT_COLUMNS = ("first_export_kwh", "last_export_kwh")


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

    # Whether the steps after an insert (after_insert) see everything derived from the
    # batch inside its own commit. Where the rollups are continuous aggregates they do
    # not: the steps then run after the commit and ``after_commit``.
    steps_in_insert_commit = True

    def insert_batch(
        self, device_pk: int, columns: Columns, after_insert: AfterInsert | None = None
    ) -> int:
        """Insert one batch given as columns (wire.SAMPLE_FIELDS order, None for a field
        no sample has) with its rollups and register breaks; returns how many rows were
        new. ``after_insert(oldest, newest, inserted)`` runs when rows were new, where it
        sees them with everything derived from them."""
        if not columns[0]:
            return 0
        from telemetry import segments

        oldest, newest = min(columns[0]), max(columns[0])
        in_commit = self.steps_in_insert_commit
        # Samples, rollups, register breaks and (where they can) what the following steps
        # derive commit together: one commit (one WAL flush) per batch, and no derived
        # row can miss a batch that was stored.
        with transaction.atomic(using=self.alias):
            inserted = self.insert_rows(device_pk, columns)
            if inserted:
                segments.refresh_breaks(device_pk, oldest, newest)
                if in_commit and after_insert is not None:
                    after_insert(oldest, newest, inserted)
        if inserted and not in_commit:
            self.after_commit(oldest, newest)
            if after_insert is not None:
                with transaction.atomic(using=self.alias):
                    after_insert(oldest, newest, inserted)
        return inserted

    def after_commit(self, oldest: datetime, newest: datetime) -> None:
        """Where the steps run after the insert's commit: bring what they read up to
        date first."""
        return

    @abstractmethod
    def insert_rows(self, device_pk: int, columns: Columns) -> int:
        """The samples (ON CONFLICT (device, ts) DO NOTHING) and, where ingest keeps them,
        their rollups, in the caller's transaction; returns how many rows were new."""

    def insert_history(self, device_pk: int, columns: Columns) -> int:
        """Months of history at once (demo.bulkload): samples, rollups and register
        breaks, no ingest steps (the caller rebuilds capacity once)."""
        return self.insert_batch(device_pk, columns)

    def refresh(self, oldest: datetime, newest: datetime) -> None:
        """Bring the rollups over [oldest, newest] up to date with the stored samples.
        Where ingest writes them they are current once the batch committed."""
        return

    def lock_register_breaks(self, cursor: Any, device_pk: int) -> None:
        """Serialise the register-break refresh of one device until the commit."""
        return  # one writer at a time: nothing to serialise

    # --- dialect ----------------------------------------------------------------------

    @abstractmethod
    def epoch_sql(self, column: str) -> str:
        """SQL: seconds since the epoch of a timestamp column or expression."""

    @abstractmethod
    def to_datetime(self, value: Any) -> datetime:
        """An aware datetime from a timestamp a raw SQL query returned."""

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
