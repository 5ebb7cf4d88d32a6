"""One migration history for SQLite, PostgreSQL, and PostgreSQL with TimescaleDB."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.db import connection

from p1common.processes import ROOT, database_url
from telemetry.storage import plan_for, timescale

TIMESCALE_URL = os.environ.get("TIMESCALE_DATABASE_URL", "")
needs_timescaledb = pytest.mark.skipif(
    not TIMESCALE_URL,
    reason="TIMESCALE_DATABASE_URL is not set: no PostgreSQL with timescaledb preloaded here",
)


def timescaledb_enabled(connection) -> bool:
    """True when this database can use TimescaleDB and settings allow it."""
    return connection.vendor == "postgresql" and timescale.usable(connection)


def is_hypertable(connection, table: str) -> bool:
    return connection.vendor == "postgresql" and timescale.is_hypertable(connection, table)


def primary_key_columns(table: str) -> list[str]:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            # Django's SQLite introspection does not keep the key's column order.
            cursor.execute(
                "SELECT name FROM pragma_table_info(%s) WHERE pk > 0 ORDER BY pk", [table]
            )
            return [name for (name,) in cursor.fetchall()]
        constraints = connection.introspection.get_constraints(cursor, table)
    (columns,) = [c["columns"] for c in constraints.values() if c["primary_key"]]
    return columns


@contextlib.contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A fresh, empty database on the given server; dropped afterwards."""
    name = f"p1_scratch_{secrets.token_hex(4)}"
    admin_url = urlunsplit(urlsplit(server_url)._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(url: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.django_db
def test_sample_key_is_device_and_ts():
    assert primary_key_columns("telemetry_sample") == ["device_id", "ts"]


@pytest.mark.django_db
def test_hypertable_exactly_when_timescaledb_can_be_loaded():
    assert is_hypertable(connection, "telemetry_sample") == timescaledb_enabled(connection)
    assert (plan_for().name == "timescale") == timescaledb_enabled(connection)


@needs_timescaledb
def test_sample_becomes_a_compressed_hypertable_on_timescaledb():
    with scratch_database(TIMESCALE_URL) as url:
        result = migrate(url, TIMESCALEDB="require")
        assert result.returncode == 0, result.stderr
        with psycopg.connect(url) as conn:
            (compressed,) = conn.execute(
                "SELECT compression_enabled FROM timescaledb_information.hypertables "
                "WHERE hypertable_name = 'telemetry_sample'"
            ).fetchone()
            segment_by = conn.execute(
                "SELECT attname FROM timescaledb_information.compression_settings "
                "WHERE hypertable_name = 'telemetry_sample' AND segmentby_column_index = 1"
            ).fetchone()
            policies = conn.execute(
                "SELECT count(*) FROM timescaledb_information.jobs "
                "WHERE hypertable_name = 'telemetry_sample' AND proc_name = 'policy_compression'"
            ).fetchone()
        assert compressed is True
        assert segment_by == ("device_id",)
        assert policies == (1,)
        # Running the migrations again (an upgrade that adds nothing) changes nothing.
        assert migrate(url, TIMESCALEDB="require").returncode == 0


@pytest.mark.django_db
def test_require_fails_clearly_where_timescaledb_cannot_be_loaded():
    if connection.vendor != "postgresql":
        pytest.skip("TimescaleDB is a PostgreSQL extension; SQLite never uses it")
    if timescaledb_enabled(connection):
        pytest.skip("this PostgreSQL can load timescaledb, so there is no failure to show")
    with scratch_database(database_url()) as url:
        result = migrate(url, TIMESCALEDB="require")
    assert result.returncode != 0
    assert "TIMESCALEDB=require" in result.stderr


@pytest.mark.django_db
def test_off_keeps_a_plain_table_even_where_timescaledb_exists():
    if not TIMESCALE_URL:
        pytest.skip("TIMESCALE_DATABASE_URL is not set: no PostgreSQL with timescaledb here")
    with scratch_database(TIMESCALE_URL) as url:
        assert migrate(url, TIMESCALEDB="off").returncode == 0
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT to_regclass('timescaledb_information.hypertables')"
            ).fetchone()
    assert row == (None,)


def _manage_migrate(env: dict[str, str], *target: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "migrate", *target, "--no-input", "-v", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextlib.contextmanager
def _scratch(tmp_path) -> Iterator[tuple[dict[str, str], object]]:
    """Environment for manage.py on an empty database of this pass's engine, and a
    DB-API connection factory to it."""
    if connection.vendor == "postgresql":
        with scratch_database(database_url()) as url:
            yield (
                {**os.environ, "DATABASE_URL": url, "TIMESCALEDB": "off"},
                (lambda: psycopg.connect(url, autocommit=True)),
            )
        return
    import sqlite3

    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATA_DIR"] = str(tmp_path)
    yield env, (lambda: sqlite3.connect(tmp_path / "p1platform.sqlite3", isolation_level=None))


@pytest.mark.django_db
def test_upgrade_keeps_samples_and_allows_meters_without_export(tmp_path):
    sample_sql = (
        "INSERT INTO telemetry_sample (device_id, ts, power_w, energy_import_kwh, "
        "energy_export_kwh) VALUES (1, {ts}, 100.0, 10.0, {export})"
    )
    quarter_sql = (
        "INSERT INTO telemetry_quarter (device_id, bucket, first_ts, last_ts, first_import_kwh, "
        "last_import_kwh, first_export_kwh, last_export_kwh, sample_count, power_sum_w, "
        "min_power_w, max_power_w) VALUES (1, {ts}, {ts}, {ts}, 10.0, 10.0, {export}, {export}, "
        "1, 100.0, 100.0, 100.0)"
    )
    with _scratch(tmp_path) as (env, connect):
        result = _manage_migrate(env, "telemetry", "0005_ingest_rejection")
        assert result.returncode == 0, result.stderr
        db = connect()
        db.execute(
            "INSERT INTO telemetry_device (id, device_id, name, timezone, created_at) "
            "VALUES (1, 'home-p1', '', 'Europe/Brussels', '2026-03-01 00:00:00')"
        )
        db.execute(sample_sql.format(ts="'2026-03-01 00:00:00'", export="5.0"))
        db.execute(quarter_sql.format(ts="'2026-03-01 00:00:00'", export="5.0"))
        db.close()

        result = _manage_migrate(env)
        assert result.returncode == 0, result.stderr
        db = connect()
        db.execute(sample_sql.format(ts="'2026-03-01 00:00:10'", export="NULL"))
        db.execute(quarter_sql.format(ts="'2026-03-01 00:15:00'", export="NULL"))
        kept = db.execute("SELECT energy_export_kwh FROM telemetry_sample ORDER BY ts").fetchall()
        rollups = db.execute(
            "SELECT first_export_kwh FROM telemetry_quarter ORDER BY bucket"
        ).fetchall()
        assert db.execute("SELECT count(*) FROM telemetry_registerbreak").fetchone() == (0,)
        # Going back needs every export register present again.
        db.execute("DELETE FROM telemetry_sample WHERE energy_export_kwh IS NULL")
        db.execute("DELETE FROM telemetry_quarter WHERE first_export_kwh IS NULL")
        db.close()
        assert [tuple(r) for r in kept] == [(5.0,), (None,)]
        assert [tuple(r) for r in rollups] == [(5.0,), (None,)]
        result = _manage_migrate(env, "telemetry", "0005_ingest_rejection")
        assert result.returncode == 0, result.stderr


@pytest.mark.django_db
def test_upgrade_marks_tokens_labelled_device_tokens_as_provisioned(tmp_path):
    """Before 0010 the label was the only mark of a DEVICE_TOKENS token."""
    token_sql = (
        "INSERT INTO telemetry_devicetoken (device_id, label, prefix, token_hash, scopes, "
        "created_at, revoked_at) VALUES (1, '{label}', 'abcdefgh', '{hash}', 'ingest,read', "
        "'2026-03-01 00:00:00', {revoked})"
    )
    with _scratch(tmp_path) as (env, connect):
        result = _manage_migrate(env, "telemetry", "0009_device_tariff_fields")
        assert result.returncode == 0, result.stderr
        db = connect()
        db.execute(
            "INSERT INTO telemetry_device (id, device_id, name, timezone, created_at, "
            "network_area, social_tariff, ean) VALUES (1, 'home-p1', '', 'Europe/Brussels', "
            "'2026-03-01 00:00:00', '', false, '')"
        )
        db.execute(token_sql.format(label="DEVICE_TOKENS", hash="a" * 64, revoked="NULL"))
        db.execute(
            token_sql.format(label="DEVICE_TOKENS", hash="b" * 64, revoked="'2026-03-02 00:00:00'")
        )
        db.execute(token_sql.format(label="dashboard", hash="c" * 64, revoked="NULL"))
        db.close()

        result = _manage_migrate(env, "telemetry", "0010_device_token_provisioned")
        assert result.returncode == 0, result.stderr
        db = connect()
        rows = db.execute(
            "SELECT token_hash, provisioned, revoked_by_list FROM telemetry_devicetoken "
            "ORDER BY token_hash"
        ).fetchall()
        db.close()
    # Who revoked the old revoked one is unknown: it stays the admin's (not restored).
    assert [(h[0], bool(p), bool(r)) for h, p, r in rows] == [
        ("a", True, False),
        ("b", True, False),
        ("c", False, False),
    ]


@pytest.mark.django_db
def test_upgrade_fills_each_months_complete_quarters_and_meter_peak(tmp_path):
    """0005 summarises what the quarters and hours already hold."""
    quarter_sql = (
        "INSERT INTO capacity_quarter (device_id, bucket, kw, coverage, sample_count, "
        "first_ts, last_ts) VALUES (1, '{ts}', {kw}, {coverage}, 90, '{ts}', '{ts}')"
    )
    hour_sql = (
        "INSERT INTO telemetry_hour (device_id, bucket, first_ts, last_ts, first_import_kwh, "
        "last_import_kwh, first_export_kwh, last_export_kwh, sample_count, power_sum_w, "
        "min_power_w, max_power_w, meter_peak_w, meter_peak_ts) VALUES (1, '{ts}', '{ts}', "
        "'{ts}', 10.0, 10.0, 5.0, 5.0, 1, 100.0, 100.0, 100.0, {peak}, '{peak_ts}')"
    )
    with _scratch(tmp_path) as (env, connect):
        result = _manage_migrate(env, "capacity", "0004_operator_quarter")
        assert result.returncode == 0, result.stderr
        db = connect()
        db.execute(
            "INSERT INTO capacity_month (device_id, month_start, month_end, peak_kw, "
            "peak_bucket) VALUES (1, '2026-02-28 23:00:00', '2026-03-31 22:00:00', 3.0, "
            "'2026-03-02 10:00:00')"
        )
        for ts, kw, coverage in [
            ("2026-03-02 10:00:00", 3.0, 1.0),
            ("2026-03-02 10:15:00", 1.0, 0.95),
            ("2026-03-02 10:30:00", 2.0, 0.5),
            ("2026-04-02 10:00:00", 9.0, 1.0),  # the next month's
        ]:
            db.execute(quarter_sql.format(ts=ts, kw=kw, coverage=coverage))
        for ts, peak, peak_ts in [
            ("2026-03-02 09:00:00", 4000.0, "2026-03-01 08:00:00"),
            ("2026-03-02 10:00:00", 4500.0, "2026-03-02 10:15:00"),
            ("2026-03-02 11:00:00", 4500.0, "2026-03-02 10:15:00"),
            ("2026-04-02 10:00:00", 9000.0, "2026-04-02 10:00:00"),
        ]:
            db.execute(hour_sql.format(ts=ts, peak=peak, peak_ts=peak_ts))
        db.close()

        result = _manage_migrate(env, "capacity", "0005_month_counts_and_meter_peak")
        assert result.returncode == 0, result.stderr
        db = connect()
        row = db.execute(
            "SELECT complete_quarters, meter_peak_w, meter_peak_bucket FROM capacity_month"
        ).fetchone()
        db.close()
    complete, meter_w, meter_bucket = row
    assert (complete, meter_w) == (2, 4500.0)
    # The latest of two equal hours, as the meter peak query always chose.
    assert str(meter_bucket).startswith("2026-03-02 11:00:00")


def test_upgrade_counts_each_months_quarters_with_data(tmp_path):
    """0006 counts what the quarters already hold, whatever their coverage."""
    quarter_sql = (
        "INSERT INTO capacity_quarter (device_id, bucket, kw, coverage, sample_count, "
        "first_ts, last_ts) VALUES (1, '{ts}', 1.0, {coverage}, 90, '{ts}', '{ts}')"
    )
    month_sql = (
        "INSERT INTO capacity_month (device_id, month_start, month_end, peak_kw, "
        "peak_bucket) VALUES (1, '{start}', '{end}', 1.0, '{start}')"
    )
    with _scratch(tmp_path) as (env, connect):
        result = _manage_migrate(env, "capacity", "0005_month_counts_and_meter_peak")
        assert result.returncode == 0, result.stderr
        db = connect()
        db.execute(month_sql.format(start="2026-02-28 23:00:00", end="2026-03-31 22:00:00"))
        db.execute(month_sql.format(start="2026-03-31 22:00:00", end="2026-04-30 22:00:00"))
        for ts, coverage in [
            ("2026-02-28 23:00:00", 1.0),  # the month's first quarter
            ("2026-03-02 10:15:00", 0.2),
            ("2026-03-31 21:45:00", 0.5),  # its last
            ("2026-03-31 22:00:00", 1.0),  # April's first
        ]:
            db.execute(quarter_sql.format(ts=ts, coverage=coverage))
        db.close()

        result = _manage_migrate(env, "capacity", "0006_month_quarters_with_data")
        assert result.returncode == 0, result.stderr
        db = connect()
        counts = db.execute(
            "SELECT quarters_with_data FROM capacity_month ORDER BY month_start"
        ).fetchall()
        db.close()
    assert [c for (c,) in counts] == [3, 1]


@needs_timescaledb
def test_timescale_upgrade_takes_null_export_in_compressed_chunks_and_aggregates():
    with scratch_database(TIMESCALE_URL) as url:
        env = {**os.environ, "DATABASE_URL": url, "TIMESCALEDB": "require"}
        result = _manage_migrate(env, "telemetry", "0005_ingest_rejection")
        assert result.returncode == 0, result.stderr
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(
                "INSERT INTO telemetry_device (id, device_id, name, timezone, created_at) "
                "VALUES (1, 'home-p1', '', 'Europe/Brussels', '2026-03-01 00:00:00+00')"
            )
            db.execute(
                "INSERT INTO telemetry_sample (device_id, ts, power_w, energy_import_kwh, "
                "energy_export_kwh) VALUES (1, '2026-03-01 00:00:00+00', 100, 10, 5)"
            )
            db.execute("SELECT compress_chunk(c) FROM show_chunks('telemetry_sample') c")
        result = _manage_migrate(env)
        assert result.returncode == 0, result.stderr
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(
                "INSERT INTO telemetry_sample (device_id, ts, power_w, energy_import_kwh, "
                "energy_export_kwh) VALUES (1, '2026-03-01 00:15:10+00', 100, 10.1, NULL)"
            )
            db.execute("CALL refresh_continuous_aggregate('telemetry_quarter', NULL, NULL)")
            rows = db.execute(
                "SELECT first_export_kwh FROM telemetry_quarter ORDER BY bucket"
            ).fetchall()
        assert rows == [(5.0,), (None,)]


def _policies(url: str) -> dict[str, object]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT coalesce(hypertable_name, ''), proc_name, config "
            "FROM timescaledb_information.jobs WHERE proc_name IN "
            "('policy_compression', 'policy_refresh_continuous_aggregate') ORDER BY job_id"
        ).fetchall()
        (interval,) = conn.execute(
            "SELECT time_interval::text FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'telemetry_sample'"
        ).fetchone()
    found: dict[str, object] = {"chunk_interval": interval}
    for _, proc, config in rows:
        if proc == "policy_compression":
            found["compress_after"] = config["compress_after"]
        else:
            found.setdefault("refresh_start", []).append(config["start_offset"])
    return found


@needs_timescaledb
def test_aggregate_refresh_never_reaches_back_as_far_as_retention_prunes():
    # A refresh over a range whose raw chunks were dropped empties the aggregates there:
    # the policies look back 12 months, the shortest retention keeps 13.
    with scratch_database(TIMESCALE_URL) as url:
        env = {**os.environ, "DATABASE_URL": url, "TIMESCALEDB": "require"}
        result = _manage_migrate(env)
        assert result.returncode == 0, result.stderr
        assert _policies(url) == {
            "chunk_interval": timescale.CHUNK_INTERVAL,
            "compress_after": timescale.COMPRESS_AFTER,
            "refresh_start": ["1 year", "1 year"],
        }
        result = _manage_migrate(env, "telemetry", "0007_pending_batch")
        assert result.returncode == 0, result.stderr
        assert _policies(url) == {
            "chunk_interval": "7 days",
            "compress_after": "30 days",
            "refresh_start": [None, None],
        }
