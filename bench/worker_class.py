"""gunicorn worker class: sync against gthread, under deploy/gunicorn.conf.py, on PostgreSQL.

    .venv/bin/python bench/worker_class.py [--rounds 2] [--database-url postgres://...]

Each configuration runs gunicorn with ``-c deploy/gunicorn.conf.py`` (access log off for
all alike; worker recycling off unless --max-requests is given, because at benchmark rates
max_requests restarts a worker every few seconds and that, not the worker class, then
dominates the tail latency), PostgreSQL and Redis as deployed, and measures, in order:
1. realtime: GET /v1/realtime with 8 connections (wrk, 2 threads, 10 s): req/s, p99;
2. ingest: POST /v1/ingest, batches of 1000 samples with every field, 4 client threads
   (bench/ingest.py's client): rows/s;
3. mixed: the realtime wrk run again while 2 client threads post 1000-sample batches
   without pause, as when edges drain a backlog while dashboards poll: realtime req/s
   and p99, ingest rows/s.
Configurations alternate over the rounds (this machine is shared and noisy); the table
gives the median of each figure and the total RSS of the gunicorn processes at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import migrate_and_setup, recreate_database  # noqa: E402

CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
INGEST_BATCHES = 120
MIXED_CLIENTS = 2
HTTP_TIMEOUT_S = 60

# (label, worker class, workers, threads): sync at gunicorn's classic 2 x CPU + 1 and at
# the 2 processes scripts/serve.sh uses; gthread at deploy/gunicorn.conf.py's default
# for 2 CPUs (2 x 4) and with one more process.
CANDIDATES = [
    ("sync 2 workers", "sync", 2, 1),
    ("sync 5 workers", "sync", 5, 1),
    ("gthread 2x4", "gthread", 2, 4),
    ("gthread 3x4", "gthread", 3, 4),
]


@dataclass
class Figures:
    realtime_rate: list[float] = field(default_factory=list)
    realtime_p99: list[float] = field(default_factory=list)
    ingest_rate: list[float] = field(default_factory=list)
    mixed_rate: list[float] = field(default_factory=list)
    mixed_p99: list[float] = field(default_factory=list)
    mixed_ingest: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument(
        "--max-requests", default="0", help="GUNICORN_MAX_REQUESTS for the runs (0: off)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/p1bench_workers"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
    )
    return parser.parse_args()


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (the gunicorn arbiter and workers)."""
    total_kb = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def post_until(
    url: str, token: str, bodies: list[bytes], stop: threading.Event
) -> tuple[list[int], list[threading.Thread]]:
    """Start MIXED_CLIENTS threads posting the bodies until ``stop``; rows received."""
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    received = [0] * MIXED_CLIENTS

    def work(i: int) -> None:
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
            n = i
            while not stop.is_set():
                response = client.post(url, content=bodies[n % len(bodies)], headers=headers)
                response.raise_for_status()
                received[i] += response.json()["received"]
                n += MIXED_CLIENTS

    threads = [threading.Thread(target=work, args=(i,)) for i in range(MIXED_CLIENTS)]
    for t in threads:
        t.start()
    return received, threads


def measure(
    candidate, token: str, batches, mixed_bodies, figures: Figures, max_requests: str
) -> None:
    import httpx

    from bench.ingest import empty_table, run_http
    from bench.queries import run_wrk
    from p1common.processes import run_server

    _, worker_class, workers, threads = candidate
    with run_server(
        workers=workers,
        threads=threads,
        config=CONFIG,
        GUNICORN_WORKER_CLASS=worker_class,
        GUNICORN_ACCESS_LOG="",
        GUNICORN_MAX_REQUESTS=max_requests,
    ) as server:
        headers = {"Authorization": f"Bearer {token}"}
        # Warm every worker: imports, database and Redis connections.
        for _ in range(4 * workers):
            with httpx.Client(timeout=HTTP_TIMEOUT_S) as fresh:
                fresh.get(f"{server.url}/v1/realtime", headers=headers).raise_for_status()
        realtime_url = f"{server.url}/v1/realtime"

        rate, p99 = run_wrk(realtime_url, token)
        figures.realtime_rate.append(rate)
        figures.realtime_p99.append(p99)

        empty_table()
        figures.ingest_rate.append(run_http(server.url, token, batches))

        stop = threading.Event()
        began = time.perf_counter()
        received, posters = post_until(f"{server.url}/v1/ingest", token, mixed_bodies, stop)
        try:
            rate, p99 = run_wrk(realtime_url, token)
        finally:
            stop.set()
            for t in posters:
                t.join()
        elapsed = time.perf_counter() - began
        figures.mixed_rate.append(rate)
        figures.mixed_p99.append(p99)
        figures.mixed_ingest.append(sum(received) / elapsed)
        figures.rss_mb.append(rss_mb(server.process.pid))


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("error: wrk is not installed (apt-get install wrk)")
    recreate_database(args.database_url)
    os.environ.update(
        DATABASE_URL=args.database_url, REDIS_URL=args.redis_url, INGEST_THROTTLE_RATE="off"
    )
    migrate_and_setup()
    from bench.ingest import make_batches
    from telemetry.models import Device
    from telemetry.tokens import issue_token

    device = Device.objects.create(device_id="bench")
    token = issue_token(device, "ingest,read")[1]
    batches = make_batches(INGEST_BATCHES)
    # The mixed phase posts batches that the ingest phase did not (later timestamps).
    mixed_bodies = [
        json.dumps({"samples": b}).encode()
        for b in make_batches(INGEST_BATCHES * 2)[INGEST_BATCHES:]
    ]

    results = {c[0]: Figures() for c in CANDIDATES}
    for round_no in range(args.rounds):
        order = CANDIDATES if round_no % 2 == 0 else list(reversed(CANDIDATES))
        for candidate in order:
            measure(
                candidate, token, batches, mixed_bodies, results[candidate[0]], args.max_requests
            )
            print(f"round {round_no + 1}: {candidate[0]} done", flush=True)

    med = statistics.median
    print(
        f"\n{os.cpu_count()} CPUs; medians of {args.rounds} rounds; wrk: 8 connections; "
        f"max_requests {args.max_requests}"
    )
    print(
        "| configuration | realtime req/s | p99 ms | ingest rows/s (4 clients) "
        "| mixed: realtime req/s | p99 ms | ingest rows/s (2 clients) | RSS MB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, figures in results.items():
        print(
            f"| {label} | {med(figures.realtime_rate):,.0f} | {med(figures.realtime_p99):.2f} "
            f"| {med(figures.ingest_rate):,.0f} | {med(figures.mixed_rate):,.0f} "
            f"| {med(figures.mixed_p99):.2f} | {med(figures.mixed_ingest):,.0f} "
            f"| {med(figures.rss_mb):.0f} |"
        )
    print("\nevery run:")
    for label, figures in results.items():
        print(f"{label}: {figures}")


if __name__ == "__main__":
    main()
