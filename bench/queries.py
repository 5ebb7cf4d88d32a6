"""Capacity and series queries at a year of data, and realtime throughput, against baselines.

    .venv/bin/python bench/queries.py [--database-url postgres://...] [--skip-load]

1. Loads one device: October 2026 at 1-second resolution (~2.7 million samples) and the
   13 months before it at 60-second resolution, written with the ingest function (binary
   unnest, rollups kept current) in batches of 10,000, not through the API.
2. Times, over HTTP against gunicorn: the first GET /v1/capacity/month/2026-10 (nothing
   cached), GET /v1/series for the year at 1d and at 1h; baseline in the same run: the
   naive query computing the month's quarter peaks by GROUP BY over the raw samples.
   Goal: the month endpoint at least 30x faster than the baseline.
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

    from telemetry.pipeline import ingest_batch
    from telemetry.validation import validate_samples

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
                total += ingest_batch(device, columns)
                batch = []
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
    if shutil.which("wrk") is None:
        sys.exit("error: wrk is not installed (apt-get install wrk)")
    os.environ.update(
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        INGEST_THROTTLE_RATE="off",
        DJANGO_SETTINGS_MODULE="bench.settings",
    )
    if not args.skip_load:
        recreate_database(args.database_url)
    migrate_and_setup("bench.settings")
    import httpx
    from django.core.cache import cache

    from bench.urls import BENCH_KEY
    from p1common.processes import run_server
    from telemetry.models import Device
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
            # Warm every worker (imports, connections, code paths) on the month before;
            # month answers are never cached, so the timed month is still computed from
            # the database on its first request.
            for _ in range(6):
                with httpx.Client(timeout=HTTP_TIMEOUT_S) as fresh:
                    fresh.get(f"{server.url}/v1/capacity/month/2026-09", headers=headers)
            cache.clear()
            month_url = f"{server.url}/v1/capacity/month/{MONTH}"
            first_month = time_get(client, month_url, headers)
            months = [first_month] + [
                time_get(client, month_url, headers) for _ in range(args.repeat - 1)
            ]
            year = "start=2025-11-01&end=2026-11-01"
            daily = [
                time_get(client, f"{server.url}/v1/series?interval=1d&{year}", headers)
                for _ in range(args.repeat)
            ]
            hourly = [
                time_get(client, f"{server.url}/v1/series?interval=1h&{year}", headers)
                for _ in range(args.repeat)
            ]
            realtime = client.get(f"{server.url}/v1/realtime", headers=headers)
            realtime.raise_for_status()
            # The baseline serves the same payload from one key, so both render alike.
            cache.set(BENCH_KEY, realtime.json(), 3600)
            client.get(f"{server.url}/bench/redis-key").raise_for_status()
        bare_rate, bare_p99 = run_wrk(f"{server.url}/bench/redis-key", token)
        realtime_rate, realtime_p99 = run_wrk(f"{server.url}/v1/realtime", token)
        bare_rate_2, _ = run_wrk(f"{server.url}/bench/redis-key", token)

    base = statistics.median(baseline)
    ms = 1000
    print(f"naive GROUP BY month peaks (baseline): median {base * ms:.1f} ms")
    print(
        f"GET /v1/capacity/month/{MONTH}: first (uncached) {first_month * ms:.1f} ms, "
        f"median {statistics.median(months) * ms:.1f} ms"
    )
    print(f"GET /v1/series year at 1d: median {statistics.median(daily) * ms:.1f} ms")
    print(f"GET /v1/series year at 1h: median {statistics.median(hourly) * ms:.1f} ms")
    print(f"ratio baseline / first month answer: {base / first_month:.1f}x  (goal >= 30x)")
    bare = (bare_rate + bare_rate_2) / 2
    print(f"bare DRF view, one Redis key: {bare:,.0f} req/s (p99 {bare_p99:.2f} ms)")
    print(f"GET /v1/realtime: {realtime_rate:,.0f} req/s (p99 {realtime_p99:.2f} ms)")
    print(f"ratio realtime / bare: {realtime_rate / bare:.2f}  (goal >= 0.80, p99 < 10 ms)")


if __name__ == "__main__":
    main()
