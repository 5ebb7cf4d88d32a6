"""Storage per household: bytes per device-year at 2 s polling with every field.

    .venv/bin/python bench/storage.py [--days 30 --days 60] [--database-url postgres://...]
        [--chunk-interval '1 day' --chunk-interval '7 days']   (TimescaleDB only)

For each size (and, on TimescaleDB, each chunk interval) a child process of this script
gets a fresh database (dropped and created), migrated, and one device whose ``--days``
of samples, one every 2 s and ending at the last UTC midnight, go in through the
storage plan's bulk path (``plan_for().insert_history``, as demo.bulkload loads history)
a day per call; then the capacity tables are rebuilt once (capacity.materialize.rebuild)
and everything is vacuumed and analysed before it is measured.

The samples carry every field a HomeWizard P1 meter reports (p1wire.SAMPLE_FIELDS): the
demo's household (demo.history: base load, fridge, cooking, EV, heating, solar export)
with jitter of its own on every phase, so power, phase power, voltage, current and the
meter's quarter average change at every reading; registers rise with the power (day
and night tariff); gas every 5 minutes; the meter's monthly peak and its time. Values
are rounded as the simulated meter (simulate_p1) rounds them.

Printed per run: bytes per sample and per device-year (365.25 days, extrapolated
linearly: the two sizes show how linear) of the raw samples (table + indexes + TOAST;
on TimescaleDB before and after compressing every chunk but the live one, with
TimescaleDB's own compression figures), the rollups (tables, or the continuous
aggregates' materialization hypertables), the capacity tables, the register breaks,
and the total. On TimescaleDB also, each a ratio of medians measured in the same run:
the time to read a month of raw samples, compressed against uncompressed; to ingest a
late hour (telemetry.pipeline.ingest_batch: the insert, the aggregates' refresh over
its window and the capacity steps) into a compressed chunk against one into the live
chunk; and to read a device's newest sample unbounded in time (as the realtime answer
does) against bounded to a day, with this run's chunks and with a year of chunks.
The same rows are also compressed with float4 and with integer columns
(``--column-types``, bench-only tables) to show what the column types cost.
TimescaleDB's background jobs are paused in the bench database: compression and
refreshes run explicitly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database  # noqa: E402

STEP_S = 2
DAY_S = 86_400
YEAR_DAYS = 365.25
SEED = 7
# Late hours left out of the load and ingested afterwards: one in the first chunk
# (compressed by then), one in the last full day (still uncompressed).
LATE_S = 3600
QUERY_ROUNDS = 5
MB = 1_000_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--days", type=int, action="append", help="days of samples per run (default 30 and 60)"
    )
    parser.add_argument(
        "--chunk-interval",
        action="append",
        help="TimescaleDB chunk interval(s) to compare (default: the migration's)",
    )
    parser.add_argument(
        "--compress-after",
        action="append",
        help="compress-after values to price the uncompressed tail for (TimescaleDB)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/p1storage_bench"
        ),
    )
    parser.add_argument(
        "--column-types",
        action="store_true",
        help="also compress the same rows with float4 and integer columns (TimescaleDB)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one measurement, JSON out
    return parser.parse_args()


# --- the household's samples -----------------------------------------------------------


def _noise(seed: int, second: int) -> float:
    from edgeclient.household import _noise as household_noise

    return household_noise(seed, second)


def generate_day(day_start: int, state: dict[str, Any]) -> list[list[Any] | None]:
    """One UTC day of samples every STEP_S as columns (wire.SAMPLE_FIELDS order).

    ``state`` carries the meter from one day to the next (registers, quarter, peak, gas).
    """
    from zoneinfo import ZoneInfo

    import p1wire as wire
    from demo.history import phases_w
    from edgeclient.household import tariff_at

    tz = ZoneInfo("Europe/Brussels")
    j_per_kwh = 3_600_000.0
    cols: dict[str, list[Any]] = {name: [] for name in wire.SAMPLE_FIELDS}
    for second in range(day_start, day_start + DAY_S, STEP_S):
        local = datetime.fromtimestamp(second, tz)
        base = phases_w(SEED, second, tz, local)
        # Every phase moves at every reading: small loads switching, measurement noise.
        phases = tuple(
            round(p + 6.0 * _noise(SEED + 11 + i, second), 1) for i, p in enumerate(base)
        )
        power = round(sum(phases), 1)
        jitter = [_noise(SEED + 21 + i, second) for i in range(3)]
        tariff = tariff_at(local)
        energy = abs(power) * STEP_S / j_per_kwh
        registers = state["registers"]
        registers[(0 if power >= 0 else 2) + tariff - 1] += energy
        winter = 0.5 + 0.5 * math.cos(2 * math.pi * (local.timetuple().tm_yday - 15) / 365)
        heating = 0.9 if 6 <= local.hour < 9 or 17 <= local.hour < 23 else 0.15
        state["gas"] += (0.02 + heating * winter) / 3600 * STEP_S
        if second % 300 == 0:
            state["gas_reported"] = (round(state["gas"], 3), second)
        imported = registers[0] + registers[1]
        if second % 900 == 0:
            if state["quarter_import"] is not None:
                average = (imported - state["quarter_import"]) * j_per_kwh / 900
                month = (local.year, local.month)
                if state["peak_month"] != month:
                    state["peak"], state["peak_month"] = None, month
                if state["peak"] is None or average > state["peak"][0]:
                    state["peak"] = (round(average, 1), second)
            state["quarter_import"] = imported
        elapsed = second % 900 or 900
        quarter_import = state["quarter_import"]
        average_now = (
            0.0 if quarter_import is None else (imported - quarter_import) * j_per_kwh / elapsed
        )
        volts = tuple(
            round(230.0 + 2.5 * math.sin(second / 600 + i) - p * 0.0004 + 0.3 * jitter[i], 1)
            for i, p in enumerate(phases)
        )
        peak = state["peak"]
        gas_m3, gas_second = state["gas_reported"]
        row = (
            datetime.fromtimestamp(second, UTC),
            power,
            round(imported, 3),
            round(registers[2] + registers[3], 3),
            round(registers[0], 3),
            round(registers[1], 3),
            round(registers[2], 3),
            round(registers[3], 3),
            *phases,
            *volts,
            *(round(p / v, 3) for p, v in zip(phases, volts, strict=True)),
            tariff,
            round(max(average_now, 0.0), 1),
            None if peak is None else peak[0],
            None if peak is None else datetime.fromtimestamp(peak[1], UTC),
            gas_m3,
            datetime.fromtimestamp(gas_second, UTC),
        )
        for name, value in zip(wire.SAMPLE_FIELDS, row, strict=True):
            cols[name].append(value)
    return [cols[name] for name in wire.SAMPLE_FIELDS]


def initial_state(start: int) -> dict[str, Any]:
    return {
        "registers": [8123.456, 5432.1, 1234.567, 432.1],
        "gas": 3210.0,
        "gas_reported": (3210.0, start - start % 300),
        "quarter_import": None,
        "peak": None,
        "peak_month": None,
    }


def without(columns: list[list[Any] | None], lo: datetime, hi: datetime) -> tuple[list, list]:
    """The columns split into (outside [lo, hi), inside)."""
    ts = columns[0] or []
    keep = [i for i, t in enumerate(ts) if not lo <= t < hi]
    take = [i for i, t in enumerate(ts) if lo <= t < hi]
    pick = lambda idx: [None if c is None else [c[i] for i in idx] for c in columns]  # noqa: E731
    return pick(keep), pick(take)


# --- one measurement (a child process) -------------------------------------------------


def _scalar(sql: str, params: list[Any] | None = None) -> Any:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchone()[0]


def _relation_sizes(name: str) -> dict[str, int]:
    """Heap, indexes, TOAST and total bytes of a plain table."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_relation_size(c.oid), pg_indexes_size(c.oid), "
            "COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0), "
            "pg_total_relation_size(c.oid) FROM pg_class c WHERE c.oid = %s::regclass",
            [name],
        )
        heap, indexes, toast, total = cursor.fetchone()
    return {"table": heap, "indexes": indexes, "toast": toast, "total": total}


def _hypertable_sizes(name: str) -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_bytes, index_bytes, toast_bytes, total_bytes "
            "FROM hypertable_detailed_size(%s::regclass)",
            [name],
        )
        heap, indexes, toast, total = cursor.fetchone()
    return {"table": heap, "indexes": indexes, "toast": toast, "total": total}


def _timed(run: Any) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def _month_query(device_pk: int, lo: datetime, hi: datetime) -> float:
    """Median seconds of one aggregate read over the raw samples of [lo, hi), warm."""
    sql = (
        "SELECT count(*), avg(power_w), max(power_l1_w), min(voltage_l1_v), "
        "max(current_l3_a), max(energy_import_kwh) - min(energy_import_kwh) "
        "FROM telemetry_sample WHERE device_id = %s AND ts >= %s AND ts < %s"
    )
    _scalar(sql, [device_pk, lo, hi])
    return statistics.median(
        _timed(lambda: _scalar(sql, [device_pk, lo, hi])) for _ in range(QUERY_ROUNDS)
    )


def measure(days: int, chunk_interval: str | None, column_types: bool) -> dict[str, Any]:
    from django.db import connection

    from capacity.materialize import rebuild
    from telemetry.models import Device
    from telemetry.storage import plan_for

    plan = plan_for()
    timescale = plan.name == "timescale"
    if timescale:
        with connection.cursor() as cursor:
            # Policies run explicitly here (and with PostgreSQL 15.20 TimescaleDB's
            # background workers end with "cannot drop portal").
            cursor.execute(
                "SELECT alter_job(job_id, scheduled => false) "
                "FROM timescaledb_information.jobs WHERE job_id >= 1000"
            )
            if chunk_interval:
                cursor.execute(
                    "SELECT set_chunk_time_interval('telemetry_sample', %s::interval)",
                    [chunk_interval],
                )
            cursor.execute(
                "SELECT d.time_interval::text FROM timescaledb_information.dimensions d "
                "WHERE d.hypertable_name = 'telemetry_sample'"
            )
            chunk_interval = cursor.fetchone()[0]

    device = Device.objects.create(device_id="bench-storage")
    today = int(datetime.now(UTC).timestamp()) // DAY_S * DAY_S
    first_day = today - days * DAY_S
    data_start = datetime.fromtimestamp(first_day, UTC)
    data_end = datetime.fromtimestamp(today, UTC)
    holes = {
        "early": [data_start + timedelta(days=1, hours=h) for h in (9, 12, 15)],
        "late": [data_end - timedelta(days=1) + timedelta(hours=h) for h in (9, 12, 15)],
    }
    state = initial_state(first_day)
    held: dict[datetime, list] = {}
    load_s = 0.0
    samples = 0
    for day in range(first_day, today, DAY_S):
        columns = generate_day(day, state)
        for lo in (*holes["early"], *holes["late"]):
            columns, held_part = without(columns, lo, lo + timedelta(seconds=LATE_S))
            if held_part[0]:
                held[lo] = held_part
        samples += len(columns[0] or [])
        load_s += _timed(lambda columns=columns: plan.insert_history(device.pk, columns))
    if not timescale:
        # No compression to wait for: the held hours go in now, so both plans measure
        # the same samples.
        for part in held.values():
            samples += plan.insert_history(device.pk, part)
        held.clear()
    rebuild(device.pk)
    if timescale:
        for view in ("telemetry_quarter", "telemetry_hour"):
            with connection.cursor() as cursor:
                cursor.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", [view])
    connection.cursor().execute("VACUUM ANALYZE")

    result: dict[str, Any] = {
        "plan": plan.name,
        "days": days,
        "samples": samples,
        "chunk_interval": chunk_interval,
        "load_s": round(load_s, 1),
    }
    query_days = max(1, min(28, days - 8))
    query_lo = data_start + timedelta(days=2)
    query_hi = query_lo + timedelta(days=query_days)
    result["query_days"] = query_days
    result["month_query_s"] = _month_query(device.pk, query_lo, query_hi)
    rollups: dict[str, dict[str, int]] = {}
    if timescale:
        result["raw"] = _hypertable_sizes("telemetry_sample")
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT view_name, format('%I.%I', materialization_hypertable_schema, "
                "materialization_hypertable_name) "
                "FROM timescaledb_information.continuous_aggregates"
            )
            for view, materialized in cursor.fetchall():
                rollups[view] = _hypertable_sizes(materialized)
    else:
        result["raw"] = _relation_sizes("telemetry_sample")
        for view in ("telemetry_quarter", "telemetry_hour"):
            rollups[view] = _relation_sizes(view)
    result["rollups"] = rollups
    result["capacity"] = {
        name: _relation_sizes(name) for name in ("capacity_quarter", "capacity_month")
    }
    result["register_breaks"] = _relation_sizes("telemetry_registerbreak")
    result["rows"] = {
        "quarters": _scalar("SELECT count(*) FROM telemetry_quarter"),
        "hours": _scalar("SELECT count(*) FROM telemetry_hour"),
        "capacity_quarters": _scalar("SELECT count(*) FROM capacity_quarter"),
        "register_breaks": _scalar("SELECT count(*) FROM telemetry_registerbreak"),
    }
    if timescale:
        result.update(_compress_and_measure(device.pk, data_end, query_lo, query_hi, held))
        if column_types:
            result["column_types"] = _column_type_experiment(device.pk, chunk_interval or "7 days")
    return result


def _compress_and_measure(
    device_pk: int, data_end: datetime, query_lo: datetime, query_hi: datetime, held: dict
) -> dict[str, Any]:
    """Compress every chunk but the live one (holding the newest sample), then the
    compressed sizes, the month read and the late hours into compressed and live chunks."""
    from django.db import connection

    from telemetry.models import Device
    from telemetry.pipeline import ingest_batch

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format('%I.%I', chunk_schema, chunk_name), range_start, range_end "
            "FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry_sample' "
            "ORDER BY range_start"
        )
        chunks = cursor.fetchall()
        live = [c for c in chunks if c[1] < data_end <= c[2] or c[2] >= data_end]
        older = [c for c in chunks if c not in live]
        compressed_rows = _scalar(
            "SELECT count(*) FROM telemetry_sample WHERE ts < %s", [older[-1][2]]
        )
        began = time.perf_counter()
        for name, _, _ in older:
            cursor.execute("SELECT compress_chunk(%s::regclass)", [name])
        compress_s = time.perf_counter() - began
    connection.cursor().execute("VACUUM ANALYZE")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT total_chunks, number_compressed_chunks, before_compression_total_bytes, "
            "after_compression_total_bytes, after_compression_table_bytes, "
            "after_compression_index_bytes, after_compression_toast_bytes "
            "FROM hypertable_compression_stats('telemetry_sample')"
        )
        stats = dict(
            zip(
                (
                    "total_chunks",
                    "compressed_chunks",
                    "before_bytes",
                    "after_bytes",
                    "after_table_bytes",
                    "after_index_bytes",
                    "after_toast_bytes",
                ),
                cursor.fetchone(),
                strict=True,
            )
        )
        cursor.execute(
            "SELECT segmentby, orderby "
            "FROM timescaledb_information.hypertable_compression_settings "
            "WHERE hypertable = 'telemetry_sample'::regclass"
        )
        settings_row = cursor.fetchone()
    out: dict[str, Any] = {
        "compressed_raw": _hypertable_sizes("telemetry_sample"),
        "compression": stats,
        "compression_settings": {"segmentby": settings_row[0], "orderby": settings_row[1]},
        "compressed_rows": compressed_rows,
        "compress_s": round(compress_s, 1),
        "month_query_compressed_s": _month_query(device_pk, query_lo, query_hi),
    }
    # The ingest path without HTTP: the insert, the aggregates' refresh over the batch's
    # window (it is older than their watermark), register breaks, capacity quarters.
    device = Device.objects.get(pk=device_pk)
    late: dict[str, list[float]] = {"early": [], "late": []}
    early = sorted(k for k in held if k < data_end - timedelta(days=2))
    recent = sorted(k for k in held if k >= data_end - timedelta(days=2))
    for a, b in zip(early, recent, strict=True):
        late["early"].append(_timed(lambda a=a: ingest_batch(device, held[a])))
        late["late"].append(_timed(lambda b=b: ingest_batch(device, held[b])))
    out["late_hour_into_compressed_s"] = statistics.median(late["early"])
    out["late_hour_into_live_s"] = statistics.median(late["late"])
    out.update(_latest_sample_reads(device_pk, data_end))
    return out


def _latest_reads(device_pk: int, since: datetime) -> tuple[float, float]:
    """Median seconds (planning included) of a device's newest sample: unbounded in
    time, as the realtime answer and the register-break window ask today, and bounded
    to the last day, which lets the planner leave out every older chunk."""
    unbounded = (
        "SELECT ts, power_w FROM telemetry_sample WHERE device_id = %s ORDER BY ts DESC LIMIT 1"
    )
    bounded = (
        "SELECT ts, power_w FROM telemetry_sample WHERE device_id = %s AND ts >= %s "
        "ORDER BY ts DESC LIMIT 1"
    )
    runs = []
    for sql, params in ((unbounded, [device_pk]), (bounded, [device_pk, since])):
        _scalar(sql, params)
        times = [_timed(lambda sql=sql, params=params: _scalar(sql, params)) for _ in range(15)]
        runs.append(statistics.median(times))
    return runs[0], runs[1]


def _latest_sample_reads(device_pk: int, data_end: datetime) -> dict[str, Any]:
    """The newest-sample read with this run's chunks, then with a year of chunks: a
    sample every 6 hours of another device for the year before the data, compressed."""
    from django.db import connection

    since = data_end - timedelta(days=1)
    chunks = "SELECT count(*) FROM show_chunks('telemetry_sample')"
    out: dict[str, Any] = {"chunks": _scalar(chunks)}
    out["latest_s"], out["latest_bounded_s"] = _latest_reads(device_pk, since)
    first = _scalar("SELECT min(ts) FROM telemetry_sample")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO telemetry_device (device_id, name, timezone, created_at) "
            "VALUES ('bench-filler', '', 'UTC', now()) RETURNING id"
        )
        (filler,) = cursor.fetchone()
        cursor.execute(
            "INSERT INTO telemetry_sample (device_id, ts, power_w, energy_import_kwh) "
            "SELECT %s, t, 100, 1 FROM generate_series(%s::timestamptz - interval '365 days', "
            "%s::timestamptz - interval '1 second', interval '6 hours') t",
            [filler, first, first],
        )
        cursor.execute(
            "SELECT count(compress_chunk(c, if_not_compressed => true)) "
            "FROM show_chunks('telemetry_sample', older_than => %s::timestamptz) c",
            [first],
        )
    connection.cursor().execute("ANALYZE telemetry_sample")
    out["year_chunks"] = _scalar(chunks)
    out["latest_year_s"], out["latest_bounded_year_s"] = _latest_reads(device_pk, since)
    return out


# What other column types would cost, on the same samples: side tables of this bench
# only (the schema is the migrations'), compressed alike.
_TYPE_VARIANTS = {
    # Measures as float4 (7 significant digits: enough for power, voltage and current,
    # not for registers, which stay float8).
    "float4 measures": {
        "float8": "energy_import_kwh energy_export_kwh energy_import_t1_kwh "
        "energy_import_t2_kwh energy_export_t1_kwh energy_export_t2_kwh gas_m3",
        "float4": "power_w power_l1_w power_l2_w power_l3_w voltage_l1_v voltage_l2_v "
        "voltage_l3_v current_l1_a current_l2_a current_l3_a average_power_15m_w "
        "monthly_power_peak_w",
    },
    # Integers in the units of the values' own resolution here: Wh, 0.1 W, 0.1 V, mA, dm3.
    "integers (Wh, 0.1 W, 0.1 V, mA)": {
        "int8 1000": "energy_import_kwh energy_export_kwh energy_import_t1_kwh "
        "energy_import_t2_kwh energy_export_t1_kwh energy_export_t2_kwh gas_m3",
        "int4 10": "power_w power_l1_w power_l2_w power_l3_w average_power_15m_w "
        "monthly_power_peak_w",
        "int2 10": "voltage_l1_v voltage_l2_v voltage_l3_v",
        "int4 1000": "current_l1_a current_l2_a current_l3_a",
    },
}


def _column_type_experiment(device_pk: int, chunk_interval: str) -> dict[str, float]:
    """Compressed bytes per sample of the device's rows stored with other column types."""
    from django.db import connection

    import p1wire as wire

    out = {}
    count = _scalar("SELECT count(*) FROM telemetry_sample WHERE device_id = %s", [device_pk])
    with connection.cursor() as cursor:
        for number, (label, groups) in enumerate(_TYPE_VARIANTS.items()):
            table = f"bench_types_{number}"
            kinds: dict[str, tuple[str, int | None]] = {}
            for spec, names in groups.items():
                sql_type, _, scale = spec.partition(" ")
                for name in names.split():
                    kinds[name] = (sql_type, int(scale) if scale else None)
            columns, selects = ["device_id bigint NOT NULL", "ts timestamptz NOT NULL"], []
            for name, kind in wire.SAMPLE_FIELDS.items():
                if name == "ts":
                    continue
                if name in kinds:
                    sql_type, scale = kinds[name]
                    columns.append(f"{name} {sql_type}")
                    selects.append(f"round({name} * {scale})" if scale else name)
                else:
                    original = {wire.TIMESTAMP: "timestamptz", wire.TARIFF: "int2"}
                    columns.append(f"{name} {original.get(kind, 'float8')}")
                    selects.append(name)
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
            cursor.execute(
                f"CREATE TABLE {table} ({', '.join(columns)}, PRIMARY KEY (device_id, ts))"
            )
            cursor.execute(
                f"SELECT create_hypertable('{table}', 'ts', chunk_time_interval => %s::interval)",
                [chunk_interval],
            )
            cursor.execute(
                f"INSERT INTO {table} SELECT device_id, ts, {', '.join(selects)} "
                "FROM telemetry_sample WHERE device_id = %s",
                [device_pk],
            )
            cursor.execute(
                f"ALTER TABLE {table} SET (timescaledb.compress, "
                "timescaledb.compress_segmentby = 'device_id', "
                "timescaledb.compress_orderby = 'ts DESC')"
            )
            cursor.execute(f"SELECT compress_chunk(c) FROM show_chunks('{table}') c")
            cursor.execute(
                "SELECT after_compression_total_bytes FROM hypertable_compression_stats(%s)",
                [table],
            )
            out[label] = cursor.fetchone()[0] / count
            cursor.execute(f"DROP TABLE {table}")
    return out


# --- the report ------------------------------------------------------------------------


def _per_year(value: float, days: int) -> float:
    return value * YEAR_DAYS / days


def report(results: list[dict[str, Any]], compress_after: list[str]) -> None:
    for r in results:
        days, samples = r["days"], r["samples"]
        head = f"{r['plan']}, {days} days, {samples:,} samples"
        if r["chunk_interval"]:
            head += f", chunk interval {r['chunk_interval']}"
        print(f"== {head} (loaded in {r['load_s']} s)")

        def line(
            label: str, total: float, note: str = "", days: int = days, samples: int = samples
        ) -> None:
            print(
                f"  {label:34} {total / samples:8.1f} B/sample "
                f"{_per_year(total, days) / MB:10.1f} MB/device-year {note}"
            )

        raw = r["raw"]
        line(
            "raw samples" + (" (uncompressed)" if r["plan"] == "timescale" else ""),
            raw["total"],
            f"(table {raw['table'] / MB:.1f} MB, indexes {raw['indexes'] / MB:.1f} MB, "
            f"TOAST {raw['toast'] / MB:.2f} MB)",
        )
        rollups = sum(v["total"] for v in r["rollups"].values())
        capacity = sum(v["total"] for v in r["capacity"].values())
        breaks = r["register_breaks"]["total"]
        line("rollups (quarter + hour)", rollups, f"({r['rows']['quarters']} quarters)")
        line("capacity tables", capacity, f"({r['rows']['capacity_quarters']} quarters)")
        rows = r["rows"]["register_breaks"]
        print(
            f"  {'register breaks':34} {breaks / 1000:8.1f} kB in all ({rows} rows: a row per "
            "meter swap, not per sample; not extrapolated)"
        )
        # Kept forever, whatever the retention: extrapolated per year, the breaks as found.
        kept_year = _per_year(rollups + capacity, days) + breaks
        if r["plan"] != "timescale":
            total = _per_year(raw["total"], days) + kept_year
            print(f"  {'total':34} {'':8} {'':10} {total / MB:10.1f} MB/device-year")
            print(
                f"  month read ({r['query_days']} days of raw samples): "
                f"{r['month_query_s'] * 1000:.0f} ms"
            )
            continue
        stats = r["compression"]
        per_sample_c = stats["after_bytes"] / r["compressed_rows"]
        per_sample_u = raw["total"] / samples
        print(
            f"  compression ({r['compression_settings']}): "
            f"{stats['compressed_chunks']} of {stats['total_chunks']} chunks, "
            f"{stats['before_bytes'] / MB:.1f} MB -> {stats['after_bytes'] / MB:.1f} MB "
            f"({stats['before_bytes'] / stats['after_bytes']:.1f}x), in {r['compress_s']} s; "
            f"hypertable_size after: {r['compressed_raw']['total'] / MB:.1f} MB"
        )
        year = YEAR_DAYS * DAY_S / STEP_S
        print(
            f"  {'raw samples, compressed':34} {per_sample_c:8.1f} B/sample "
            f"{per_sample_c * year / MB:10.1f} MB/device-year (every chunk compressed)"
        )
        print(
            f"  {'total, all compressed':34} {'':8} {'':10}"
            f" {(per_sample_c * year + kept_year) / MB:.1f} MB/device-year"
        )
        chunk_days = _interval_days(r["chunk_interval"])
        for after in compress_after:
            tail_days = _interval_days(after) + chunk_days  # worst case: a full chunk waits
            tail = tail_days * DAY_S / STEP_S
            total = per_sample_c * (year - tail) + per_sample_u * tail + kept_year
            print(
                f"  total, compress after {after:>8}: {total / MB:8.1f} MB/device-year "
                f"(up to {tail_days:g} days uncompressed: {per_sample_u * tail / MB:.0f} MB)"
            )
        q_u, q_c = r["month_query_s"], r["month_query_compressed_s"]
        print(
            f"  month read ({r['query_days']} days of raw samples): uncompressed "
            f"{q_u * 1000:.0f} ms, compressed {q_c * 1000:.0f} ms (ratio {q_c / q_u:.2f})"
        )
        for label, per_sample in r.get("column_types", {}).items():
            print(
                f"  {'  same rows, ' + label:34} {per_sample:8.1f} B/sample "
                f"{per_sample * year / MB:10.1f} MB/device-year (bench-only table, compressed)"
            )
        l_c, l_u = r["late_hour_into_compressed_s"], r["late_hour_into_live_s"]
        print(
            f"  a late hour ({LATE_S // STEP_S} samples, pipeline.ingest_batch): into the "
            f"live chunk {l_u * 1000:.0f} ms, into a compressed chunk {l_c * 1000:.0f} ms "
            f"(ratio {l_c / l_u:.2f})"
        )
        print(
            f"  a device's newest sample, {r['chunks']} chunks: {r['latest_s'] * 1000:.1f} ms "
            f"(bounded to a day: {r['latest_bounded_s'] * 1000:.1f} ms); with a year of "
            f"chunks ({r['year_chunks']}): {r['latest_year_s'] * 1000:.1f} ms (bounded: "
            f"{r['latest_bounded_year_s'] * 1000:.1f} ms; ratio unbounded/bounded "
            f"{r['latest_year_s'] / r['latest_bounded_year_s']:.1f})"
        )


def _interval_days(text: str) -> float:
    """Days in an interval as PostgreSQL prints it ('7 days', '1 day', '12:00:00')."""
    total = 0.0
    parts = text.split()
    for i, part in enumerate(parts):
        if ":" in part:
            h, m, s = (float(x) for x in part.split(":"))
            total += (h * 3600 + m * 60 + s) / DAY_S
        elif i + 1 < len(parts) and parts[i + 1].startswith("day"):
            total += float(part)
        elif i + 1 < len(parts) and parts[i + 1].startswith("hour"):
            total += float(part) / 24
    return total


def main() -> None:
    args = parse_args()
    if args.child:
        spec = json.loads(args.child)
        fresh_database(args.database_url)
        result = measure(spec["days"], spec["chunk_interval"], spec["column_types"])
        print(json.dumps(result, default=str))
        return
    sizes = args.days or [30, 60]
    intervals: list[str | None] = list(args.chunk_interval or [None])
    results = []
    for interval in intervals:
        for days in sizes:
            spec = json.dumps(
                {"days": days, "chunk_interval": interval, "column_types": args.column_types}
            )
            child = subprocess.run(
                [sys.executable, __file__, "--database-url", args.database_url, "--child", spec],
                cwd=ROOT,
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            )
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    report(results, args.compress_after or ["2 days", "7 days", "30 days"])


if __name__ == "__main__":
    main()
