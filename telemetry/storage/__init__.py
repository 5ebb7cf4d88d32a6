"""Where samples and their rollups are kept: one storage plan per database, chosen once.

Three plans keep the same relations (telemetry_sample, telemetry_quarter,
telemetry_hour) with the same columns, so the query code has one path:

- ``TimescalePlan``: Sample is a hypertable, the rollups continuous aggregates.
- ``PostgresTablesPlan``: PostgreSQL without the extension; the insert merges its new
  rows into rollup tables in the same statement.
- ``SqlitePlan``: the embedded default; the touched buckets are recomputed after the
  insert, in the same transaction.

``plan_for(alias)`` picks one from what the database holds and remembers it for that
alias and database; a migration that changes the answer forgets it. Everything that
differs between the three (the batch insert with its rollups, their refresh, the
register-break lock, the SQL dialect the queries need, the migrations' DDL, the demo's
bulk load) is a method of the plan (telemetry.storage.base.StoragePlan); nothing
outside this package asks which database it talks to.
"""

from __future__ import annotations

import threading

from django.db import DEFAULT_DB_ALIAS, connections

from telemetry.storage.base import Columns, StoragePlan, timestamps

__all__ = ["Columns", "StoragePlan", "forget", "plan_for", "timestamps"]

_lock = threading.Lock()
_chosen: dict[tuple, StoragePlan] = {}


def _key(alias: str) -> tuple:
    # The database's identity, not only the alias: the test runner points an alias at
    # its test database, and a plan found for the other one must not be reused there.
    settings_dict = connections[alias].settings_dict
    return (
        alias,
        settings_dict["ENGINE"],
        settings_dict.get("HOST"),
        settings_dict.get("PORT"),
        str(settings_dict["NAME"]),
    )


def plan_for(alias: str = DEFAULT_DB_ALIAS) -> StoragePlan:
    """The storage plan of the database behind ``alias``, chosen on first use.

    Only the default alias holds samples today: the register-break and capacity code
    that runs inside a batch's transaction uses the default connection.
    """
    key = _key(alias)
    plan = _chosen.get(key)
    if plan is None:
        with _lock:
            plan = _chosen.get(key)
            if plan is None:
                plan = _chosen[key] = _choose(alias)
    return plan


def forget(alias: str | None = None) -> None:
    """Choose again on next use (after migrations, which may change the plan)."""
    with _lock:
        for key in [k for k in _chosen if alias is None or k[0] == alias]:
            del _chosen[key]


def _choose(alias: str) -> StoragePlan:
    from telemetry.storage import timescale
    from telemetry.storage.postgres import PostgresTablesPlan
    from telemetry.storage.sqlite import SqlitePlan

    connection = connections[alias]
    vendor = connection.vendor  # the one place that asks
    if vendor == "sqlite":
        return SqlitePlan(alias)
    if vendor != "postgresql":
        raise NotImplementedError(f"no storage plan for a {vendor} database")
    # Migration 0002 makes Sample a hypertable exactly when TimescaleDB can be used; the
    # rollup relations follow (0004), so the hypertable says which plan this database is.
    if timescale.is_hypertable(connection):
        return timescale.TimescalePlan(alias)
    return PostgresTablesPlan(alias)
