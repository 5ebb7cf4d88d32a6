"""Whether this database can use TimescaleDB, and the DDL that uses it.

Migrations call these so that one migration history serves SQLite, plain PostgreSQL
and PostgreSQL with TimescaleDB. ``CREATE EXTENSION timescaledb`` on a server that does
not preload the library is FATAL (it drops the connection), so detection must ask
first and never just try.
"""

from __future__ import annotations

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper

SAMPLE_TABLE = "telemetry_sample"
CHUNK_INTERVAL = "7 days"
COMPRESS_AFTER = "30 days"


class TimescaleRequired(RuntimeError):
    pass


def _loadable(cursor) -> bool:
    cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    if cursor.fetchone():
        return True
    cursor.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    if not cursor.fetchone():
        return False
    cursor.execute("SELECT current_setting('shared_preload_libraries')")
    preload = cursor.fetchone()[0] or ""
    return "timescaledb" in [lib.strip() for lib in preload.split(",")]


def timescaledb_enabled(connection: BaseDatabaseWrapper) -> bool:
    """True when the extension is (or can be) created here and settings allow it."""
    if connection.vendor != "postgresql" or settings.TIMESCALEDB == "off":
        return False
    with connection.cursor() as cursor:
        usable = _loadable(cursor)
    if not usable and settings.TIMESCALEDB == "require":
        raise TimescaleRequired(
            "TIMESCALEDB=require but the server cannot load the timescaledb extension "
            "(install it and add it to shared_preload_libraries)"
        )
    return usable


def is_hypertable(connection: BaseDatabaseWrapper, table: str) -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return False
        cursor.execute(
            "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
            [table],
        )
        return cursor.fetchone() is not None


def make_sample_hypertable(apps, schema_editor) -> None:
    """Migration step: Sample becomes a compressed hypertable when TimescaleDB is here."""
    connection = schema_editor.connection
    if not timescaledb_enabled(connection):
        return
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


# Dropping NOT NULL on a hypertable with compression enabled is refused before 2.18
# ("operation not supported on hypertables that have compression enabled").
NULLABLE_COLUMN_MIN_VERSION = (2, 18)


def require_nullable_column_support(apps, schema_editor) -> None:
    """Migration step: say in one line which TimescaleDB a column change needs, instead
    of failing inside ALTER TABLE with the extension's generic refusal."""
    connection = schema_editor.connection
    if not is_hypertable(connection, SAMPLE_TABLE):
        return
    with connection.cursor() as cursor:
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
