"""Every read endpoint at a year of data against the 100 ms line, and realtime throughput.

    .venv/bin/python bench/queries.py [--database-url postgres://...|sqlite:///file] [--skip-load]

1. Loads one device: October 2026 at 1-second resolution (~2.7 million samples) and the
   13 months before it at 60-second resolution, written with the ingest function (binary
   unnest, rollups kept current) in batches of 10,000, not through the API (on SQLite
   with the demo's bulk load and one capacity rebuild: the same rows, in minutes).
2. Times, over HTTP against gunicorn, each read endpoint: its first request with nothing
   cached (the cache cleared just before; each worker process warmed on other requests;
   the series blocks stored as ingest left them, telemetry.series_blocks)
   and its warm requests (median and slowest of --repeat). /v1/series at every interval
   over the widest range its 10,000-bucket limit and the API's years allow. Goal
   (issue 17): every first and warm answer under 100 ms. Baseline in the same run: the
   naive query computing the month's quarter peaks by GROUP BY over the raw samples;
   goal: the first month answer at least 30x faster.
3. Realtime throughput with 8 concurrent connections (wrk) against a bare DRF view that
   returns one Redis key, in the same run. Goal: >= 80% of it, p99 under 10 ms.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import migrate_and_setup, recreate_database  # noqa: E402

BATCH = 10_000
MONTH = "2026-10"
MONTH_START = datetime(2026, 9, 30, 22, tzinfo=UTC)  # 1 October 00:00 in Brussels
MONTH_END = datetime(2026, 10, 31, 23, tzinfo=UTC)
HISTORY_START = datetime(2025, 8, 31, 22, tzinfo=UTC)  # 13 months earlier
WRK_SECONDS = 10
HTTP_TIMEOUT_S = 60
LINE_MS = 100.0
# The 10,000 buckets before 1 November 2026 (Brussels) at 15 minutes and at an hour,
# and from the API's first year for the wider intervals (fewer than 10,000 buckets).
SERIES = [
    ("15m", (MONTH_END - 10_000 * timedelta(minutes=15)).isoformat(), "2026-11-01"),
    ("1h", (MONTH_END - 10_000 * timedelta(hours=1)).isoformat(), "2026-11-01"),
    ("1d", "2000-01-01", "2026-11-01"),
    ("1w", "2000-01-03", "2026-11-01"),
    ("1mo", "2000-01-01", "2026-11-01"),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/p1bench_queries"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    )
    parser.add_argument("--skip-load", action="store_true", help="reuse the loaded database")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions per query")
    parser.add_argument("--skip-wrk", action="store_true", help="no realtime throughput run")
    return parser.parse_args()


def household_kw(ts: datetime) -> float:
    """A deterministic daily curve with evening and EV peaks; export at noon."""
    hour = (ts.hour + 2) % 24 + ts.minute / 60
    base = 0.35
    if 17 <= hour < 20:
        base += 2.5
    if ts.day % 3 == 0 and 21 <= hour < 23:
        base += 7.4  # EV charging
    if 11 <= hour < 15:
        base -= 2.0  # solar
    return base + 0.2 * ((ts.second * 7 + ts.minute * 13) % 10) / 10


def load(device) -> int:
    from django.utils import timezone

    from capacity.materialize import rebuild
    from telemetry.pipeline import ingest_batch
    from telemetry.storage import plan_for
    from telemetry.validation import validate_samples

    plan = plan_for()
    # SQLite's ingest recomputes the touched buckets per batch: the bulk load stores the
    # same rows (tests/test_demo_history.py) and capacity is rebuilt once at the end.
    bulk = plan.name == "sqlite"

    now = timezone.now()
    register, total = 20_000.0, 0
    for start, end, step in ((HISTORY_START, MONTH_START, 60), (MONTH_START, MONTH_END, 1)):
        ts, batch = start, []
        while ts < end:
            kw = household_kw(ts)
            batch.append(
                {
                    "ts": ts.isoformat(),
                    "power_w": kw * 1000,
                    "energy_import_kwh": register,
                    "energy_export_kwh": 1000.0,
                }
            )
            register += max(kw, 0) * step / 3600
            ts += timedelta(seconds=step)
            if len(batch) == BATCH or ts >= end:
                columns, errors = validate_samples(batch, now=now)
                assert not errors, errors[:2]
                if bulk:
                    total += plan.insert_history(device.pk, columns)
                else:
                    total += ingest_batch(device, columns)
                batch = []
    if bulk:
        rebuild(device.pk)
    return total


NAIVE_MONTH_PEAKS = """
    SELECT max(kw) FROM (
        SELECT (max(energy_import_kwh) - min(energy_import_kwh)) * 4 AS kw
        FROM telemetry_sample
        WHERE device_id = %s AND ts >= %s AND ts < %s
        GROUP BY date_bin('15 minutes', ts, TIMESTAMPTZ '2000-01-01')
    ) quarters
"""


def time_baseline(device_pk: int, repeat: int) -> list[float]:
    from django.db import connection

    if connection.vendor != "postgresql":
        return []  # date_bin is PostgreSQL's; the baseline is measured there
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(NAIVE_MONTH_PEAKS, [device_pk, MONTH_START, MONTH_END])
            cursor.fetchone()
        times.append(time.perf_counter() - began)
    return times


def time_get(client, url: str, headers: dict) -> float:
    began = time.perf_counter()
    response = client.get(url, headers=headers)
    elapsed = time.perf_counter() - began
    response.raise_for_status()
    return elapsed


def time_endpoints(client, server_url: str, headers: dict, repeat: int) -> list[tuple]:
    """(path, first ms, warm median ms, warm slowest ms) per read endpoint."""
    from django.core.cache import cache

    paths = [
        "/v1/realtime",
        f"/v1/capacity/month/{MONTH}",
        "/v1/capacity/month/2026-09",
        f"/v1/capacity/months?end={MONTH}",
        "/v1/capacity/quarters?date=2026-10-15",
        "/v1/capacity/quarters?date=2026-09-15",
        "/v1/devices",
        *(f"/v1/series?interval={i}&start={quote(a)}&end={b}" for i, a, b in SERIES),
    ]
    rows = []
    for path in paths:
        cache.clear()  # nothing cached: the token check's own copy is refilled first
        client.get(f"{server_url}/v1/devices", headers=headers).raise_for_status()
        first = time_get(client, f"{server_url}{path}", headers)
        warm = [time_get(client, f"{server_url}{path}", headers) for _ in range(repeat)]
        rows.append((path, first * 1000, statistics.median(warm) * 1000, max(warm) * 1000))
    return rows


def time_series_without_blocks(client, server_url: str, headers: dict, device_pk: int) -> list:
    """(path, ms) of each widest series with no stored block and nothing cached: the
    first request after an upgrade, before any batch or read stored a block."""
    from django.core.cache import cache

    from telemetry import series_blocks

    rows = []
    for interval, start, end in SERIES:
        path = f"/v1/series?interval={interval}&start={quote(start)}&end={end}"
        series_blocks.forget_all(device_pk)
        cache.clear()
        client.get(f"{server_url}/v1/devices", headers=headers).raise_for_status()
        rows.append((path, time_get(client, f"{server_url}{path}", headers) * 1000))
    return rows


def print_endpoints(rows: list[tuple]) -> None:
    print(f"{'endpoint':<72} {'first':>8} {'warm':>8} {'slowest':>8}  (ms; line {LINE_MS:.0f})")
    for path, first, warm, slowest in rows:
        over = "" if max(first, slowest) < LINE_MS else "  OVER"
        print(f"{path:<72} {first:8.1f} {warm:8.1f} {slowest:8.1f}{over}")
    worst = max(max(r[1], r[3]) for r in rows)
    verdict = "all under" if worst < LINE_MS else "NOT all under"
    print(f"slowest answer {worst:.1f} ms: {verdict} {LINE_MS:.0f} ms")


def run_wrk(url: str, token: str) -> tuple[float, float]:
    """Requests per second and p99 latency (ms) with 8 connections on 2 threads."""
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c8",
            f"-d{WRK_SECONDS}s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p99_text = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    p99 = float(p99_text.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99_text.group(2)]
    if "Non-2xx" in output:
        raise RuntimeError(f"wrk saw error answers from {url}:\n{output}")
    return rate, p99


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None and not args.skip_wrk:
        sys.exit("error: wrk is not installed (apt-get install wrk)")
    os.environ.update(
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        INGEST_THROTTLE_RATE="off",
        DJANGO_SETTINGS_MODULE="bench.settings",
    )
    if not args.skip_load:
        if args.database_url.startswith("sqlite:"):
            Path(args.database_url.removeprefix("sqlite:///")).unlink(missing_ok=True)
        else:
            recreate_database(args.database_url)
    migrate_and_setup("bench.settings")
    import httpx
    from django.core.cache import cache

    from bench.urls import BENCH_KEY
    from p1common.processes import run_server
    from telemetry import series_blocks
    from telemetry.models import Device, SeriesBlock
    from telemetry.tokens import issue_token

    if args.skip_load:
        device = Device.objects.get(device_id="bench")
    else:
        device = Device.objects.create(device_id="bench")
        began = time.perf_counter()
        rows = load(device)
        print(f"loaded {rows:,} samples in {time.perf_counter() - began:.0f} s")
    token = issue_token(device, "read")[1]
    headers = {"Authorization": f"Bearer {token}"}
    baseline = time_baseline(device.pk, args.repeat)

    with run_server(workers=2, threads=1, DJANGO_SETTINGS_MODULE="bench.settings") as server:
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
            # Warm every worker (imports, connections, code paths) on answers the timed
            # ones do not share; the cache is cleared before each timed endpoint.
            for _ in range(6):
                with httpx.Client(timeout=HTTP_TIMEOUT_S) as fresh:
                    for warm in ("/v1/capacity/month/2025-12", "/v1/series?interval=1d"):
                        fresh.get(f"{server.url}{warm}", headers=headers)
            endpoints = time_endpoints(client, server.url, headers, args.repeat)
            blocks = SeriesBlock.objects.filter(device=device).count()
            without_blocks = time_series_without_blocks(client, server.url, headers, device.pk)
            series_blocks.fill_device(device.pk)
            cache.clear()
            month_url = f"{server.url}/v1/capacity/month/{MONTH}"
            first_month = time_get(client, month_url, headers)
            realtime = client.get(f"{server.url}/v1/realtime", headers=headers)
            realtime.raise_for_status()
            # The baseline serves the same payload from one key, so both render alike.
            cache.set(BENCH_KEY, realtime.json(), 3600)
            client.get(f"{server.url}/bench/redis-key").raise_for_status()
        if not args.skip_wrk:
            bare_rate, bare_p99 = run_wrk(f"{server.url}/bench/redis-key", token)
            realtime_rate, realtime_p99 = run_wrk(f"{server.url}/v1/realtime", token)
            bare_rate_2, _ = run_wrk(f"{server.url}/bench/redis-key", token)

    ms = 1000
    print_endpoints(endpoints)
    print(f"series blocks stored before the first requests: {blocks:,}")
    print("the same series with no stored block (as after an upgrade; the first read stores them):")
    for path, first in without_blocks:
        print(f"{path:<72} {first:8.1f}")
    if baseline:
        base = statistics.median(baseline)
        print(f"naive GROUP BY month peaks (baseline): median {base * ms:.1f} ms")
        print(f"ratio baseline / first month answer: {base / first_month:.1f}x  (goal >= 30x)")
    if args.skip_wrk:
        return
    bare = (bare_rate + bare_rate_2) / 2
    print(f"bare DRF view, one Redis key: {bare:,.0f} req/s (p99 {bare_p99:.2f} ms)")
    print(f"GET /v1/realtime: {realtime_rate:,.0f} req/s (p99 {realtime_p99:.2f} ms)")
    print(f"ratio realtime / bare: {realtime_rate / bare:.2f}  (goal >= 0.80, p99 < 10 ms)")


if __name__ == "__main__":
    main()
