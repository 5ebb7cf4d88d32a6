"""Ingest throughput over HTTP against the raw database baseline, in one run.

    .venv/bin/python bench/ingest.py [--batches 240] [--live] [--database-url postgres://...]

1. A fresh PostgreSQL database is migrated; a device and an ingest token are created.
2. Baseline: the same rows go straight into telemetry_sample with
   INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING from 2 psycopg connections.
3. End to end: gunicorn (2 sync workers against the raw insert's 2 connections, or
   ``--workers 0``: deploy/gunicorn.conf.py's own count, 2 x CPU + 1; with Redis as
   deployed) serves POST /v1/ingest,
   which also keeps the rollups and capacity tables current; 4 client threads post
   batches of 1000 samples with every optional field, bodies encoded beforehand so the
   client's own JSON work is not measured.
   With ``--steps worker`` (the default, as deployed) the server defers the capacity and
   peak-guard work to the ingest-steps worker (manage.py run_ingest_steps, a cycle every
   WORKER_INTERVAL_S), which runs beside it; the clock stops when the last batch is
   answered and the worker has done all the work the batches owe. ``inline``: each
   request does its own.
The table is emptied between phases and each phase runs twice, alternating, because this
machine is shared and noisy. The ratio of the medians is the figure (goal >= 0.70).

By default the rows are one device's 2.8 days from 2025: a backlog drain. On TimescaleDB
each such batch also refreshes the continuous aggregates over its window (it is older
than the aggregates' watermark). ``--live`` spreads the rows over LIVE_DEVICES devices
whose samples end a minute ago, each within the last 100 minutes: a fleet of edges
posting as they read, the path real-time aggregation serves without a refresh.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database, timed_threads  # noqa: E402

BATCH = 1000
CLIENT_THREADS = 4
RAW_CONNECTIONS = 2
HTTP_TIMEOUT_S = 60
LIVE_DEVICES = 48
# Each device's measured rows span at most this, ending a minute ago.
LIVE_SPAN_S = 85 * 60
WORKER_INTERVAL_S = 0.5
DRAIN_TIMEOUT_S = 600
CONFIG = ROOT / "deploy" / "gunicorn.conf.py"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=240, help="batches of 1000 per phase")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per phase")
    parser.add_argument(
        "--live", action="store_true", help=f"recent samples of {LIVE_DEVICES} devices"
    )
    parser.add_argument("--steps", choices=("worker", "inline"), default="worker")
    parser.add_argument(
        "--workers", type=int, default=2, help="gunicorn sync workers (0: as deployed)"
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/p1bench"),
    )
    return parser.parse_args()


Batch = tuple[int, list[dict]]  # (index of the device, its samples)


def make_batches(count: int, devices: int = 1, end: datetime | None = None) -> list[Batch]:
    """``count`` batches of BATCH samples a second apart, dealt round-robin to ``devices``;
    from 2025-01-01, or ending at ``end`` for every device."""
    from p1common.samples import sample

    per_device = -(-count // devices)
    if end is None:
        start = datetime(2025, 1, 1, tzinfo=UTC)
    else:
        start = end - timedelta(seconds=per_device * BATCH)
    batches = []
    for b in range(count):
        first = start + timedelta(seconds=(b // devices) * BATCH)
        batches.append((b % devices, [sample(first + timedelta(seconds=i)) for i in range(BATCH)]))
    return batches


def run_raw(url: str, device_pks: list[int], batches: list[Batch]) -> float:
    """Rows per second with the statement the server itself would ideally run."""
    import psycopg

    from telemetry.storage.postgres import SAMPLE_INSERT
    from telemetry.validation import validate_samples

    now = datetime.now(UTC)
    params = []
    for device, batch in batches:
        columns, errors = validate_samples(batch, now)
        assert not errors, errors[:3]
        params.append([device_pks[device], *columns])
    connections = [psycopg.connect(url, autocommit=True) for _ in range(RAW_CONNECTIONS)]
    inserted = [0] * RAW_CONNECTIONS

    def work(i: int, start: threading.Barrier) -> None:
        conn = connections[i]
        start.wait()
        for p in params[i::RAW_CONNECTIONS]:
            inserted[i] += conn.execute(SAMPLE_INSERT, p).rowcount

    elapsed = timed_threads(work, RAW_CONNECTIONS)
    for conn in connections:
        conn.close()
    assert sum(inserted) == len(batches) * BATCH, inserted
    return sum(inserted) / elapsed


def run_http(server_url: str, tokens: list[str], batches: list[Batch], worker=None) -> float:
    """Rows per second through the API; with a worker, until it has done what they owe."""
    import httpx

    from p1common.processes import WORKER_CYCLE

    posts = [
        (
            json.dumps({"samples": b}).encode(),
            {"Authorization": f"Bearer {tokens[device]}", "Content-Type": "application/json"},
        )
        for device, b in batches
    ]
    inserted = [0] * CLIENT_THREADS

    def work(i: int, start: threading.Barrier) -> None:
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
            start.wait()
            for body, headers in posts[i::CLIENT_THREADS]:
                response = client.post(f"{server_url}/v1/ingest", content=body, headers=headers)
                response.raise_for_status()
                inserted[i] += response.json()["inserted"]

    def drained() -> None:
        idle = len(worker.log.matching(f"{WORKER_CYCLE}0 devices"))
        worker.log.wait_for(f"{WORKER_CYCLE}0 devices", DRAIN_TIMEOUT_S, count=idle + 1)

    elapsed = timed_threads(work, CLIENT_THREADS)
    if worker is not None:
        began = time.perf_counter()
        drained()
        elapsed += time.perf_counter() - began
    assert sum(inserted) == len(batches) * BATCH, inserted
    return sum(inserted) / elapsed


def empty_table() -> None:
    """Samples and, where ingest keeps them as tables, the rollups: every round starts
    alike (left in place, later rounds would merge into existing rollup rows)."""
    from django.db import connection

    from telemetry.storage import plan_for

    tables = "telemetry_sample"
    if plan_for().ingest_keeps_rollups:
        tables += ", telemetry_quarter, telemetry_hour"
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables}")


def main() -> None:
    args = parse_args()
    # As deployed (DESIGN.md): PostgreSQL and Redis. Redis holds the token generation
    # and the realtime answers each batch invalidates.
    os.environ["INGEST_STEPS_WORKER"] = "on" if args.steps == "worker" else "off"
    fresh_database(args.database_url, args.redis_url)
    from p1common.processes import run_server, start_steps_worker
    from telemetry.models import Device
    from telemetry.tokens import issue_token

    devices = [
        Device.objects.create(device_id=f"bench-{n}")
        for n in range(LIVE_DEVICES if args.live else 1)
    ]
    pks = [d.pk for d in devices]
    tokens = [issue_token(d, "ingest")[1] for d in devices]
    if args.live:
        # Measured rows stay newer than the warmup's (90 min ago) and than the
        # aggregates' 2-hour watermark.
        per_device = LIVE_SPAN_S // BATCH
        if -(-args.batches // len(devices)) > per_device:
            raise SystemExit(f"--live: at most {per_device * len(devices)} batches")
        end = datetime.now(UTC) - timedelta(minutes=1)
        batches = make_batches(args.batches, len(devices), end)
        warmup = make_batches(8, len(devices), end - timedelta(minutes=90))
    else:
        batches = make_batches(args.batches)
        warmup = make_batches(args.batches + 8)[-8:]

    raw_rates: list[float] = []
    http_rates: list[float] = []
    worker = start_steps_worker(WORKER_INTERVAL_S) if args.steps == "worker" else None
    try:
        if args.workers:
            serving = run_server(workers=args.workers, threads=1)
        else:
            serving = run_server(workers=None, threads=None, config=CONFIG)
        with serving as server:
            run_http(server.url, tokens, warmup, worker)
            empty_table()
            for _ in range(args.rounds):
                raw_rates.append(run_raw(args.database_url, pks, batches))
                empty_table()
                http_rates.append(run_http(server.url, tokens, batches, worker))
                empty_table()
    finally:
        if worker is not None:
            worker.stop()

    raw = statistics.median(raw_rates)
    end_to_end = statistics.median(http_rates)
    rows = len(batches) * BATCH
    kind = f"live, {len(devices)} devices" if args.live else "backlog, one device"
    print(f"rows per phase: {rows} in batches of {BATCH} ({kind})")
    print(f"raw baseline ({RAW_CONNECTIONS} connections, unnest): " + _rates(raw_rates))
    steps = "the ingest-steps worker" if args.steps == "worker" else "each request"
    workers = args.workers or "as deployed"
    print(
        f"HTTP ingest (gunicorn workers: {workers}, {CLIENT_THREADS} clients, steps by {steps}): "
        + _rates(http_rates)
    )
    print(f"ratio end-to-end / raw: {end_to_end / raw:.2f}  (goal >= 0.70)")


def _rates(rates: list[float]) -> str:
    each = ", ".join(f"{r:,.0f}" for r in rates)
    return f"{each} rows/s (median {statistics.median(rates):,.0f})"


if __name__ == "__main__":
    main()
