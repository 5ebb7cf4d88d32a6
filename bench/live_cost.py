"""CPU per live batch: each request doing its own steps against the ingest-steps worker.

    .venv/bin/python bench/live_cost.py [--devices 200] [--batches 1000] [--rounds 3]
        [--database-url postgres://...]

A fresh database and Redis; DEVICES households, each with an ingest token. Each round
posts BATCHES live batches (the edge's default: five 2-second readings with every
field) through Django's full request path (middleware, DRF, the token check, the
throttle) in this process, households in turn, and counts CPU seconds: this process's
and its PostgreSQL backend's (/proc). Two ways, alternating in every round:
- inline: INGEST_STEPS_WORKER off, every request does its own steps before answering;
- worker: the requests only store, then one run of the owed steps (what the worker's
  cycle does) does the steps for all of them; its CPU is added to the batches'.
The households' batches arrive every UPLOAD_S of simulated time, so each worker cycle
sees CYCLE_S / UPLOAD_S batches per household, as the worker at its default interval
does. CPU time, not wall time: the figure holds on a busy machine better than a rate.
Prints CPU ms per batch for both, and the ratio inline / worker.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database  # noqa: E402

UPLOAD_S = 10  # edgeclient.config.DEFAULT_UPLOAD_INTERVAL_S
CYCLE_S = 60  # settings.INGEST_STEPS_INTERVAL_S's default
SAMPLES = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--batches", type=int, default=1000, help="batches per way per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/p1cost"),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    return parser.parse_args()


def backend_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    args = parse_args()
    os.environ["ALLOWED_HOSTS"] = "*"
    fresh_database(args.database_url, args.redis_url)
    from django.db import connection
    from django.test import Client, override_settings

    from p1common.samples import sample
    from telemetry.models import Device
    from telemetry.pipeline import run_owed_steps
    from telemetry.tokens import issue_token

    devices = [Device.objects.create(device_id=f"cost-{n:04d}") for n in range(args.devices)]
    tokens = [issue_token(d, "ingest")[1] for d in devices]
    client = Client()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    # Simulated time: batch k of a household is UPLOAD_S after its batch k - 1, all of
    # it in the last hours (newer than TimescaleDB's aggregate watermark).
    clock = [datetime.now(UTC) - timedelta(hours=1)]

    def bodies(count: int) -> list[tuple[str, str]]:
        out = []
        for i in range(count):
            device = i % len(devices)
            if device == 0:
                clock[0] += timedelta(seconds=UPLOAD_S)
            first = clock[0] + timedelta(milliseconds=device)
            batch = [
                sample(first + timedelta(seconds=2 * k), power_w=900.0 + (i * 7 + k) % 2000)
                for k in range(SAMPLES)
            ]
            out.append((tokens[device], json.dumps({"samples": batch})))
        return out

    def post_all(batch_bodies: list[tuple[str, str]]) -> None:
        for token, body in batch_bodies:
            response = client.post(
                "/v1/ingest",
                body,
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {token}",
            )
            assert response.status_code == 200, response.content

    per_cycle = max(1, CYCLE_S // UPLOAD_S) * len(devices)

    def measure(way: str, batch_bodies: list[tuple[str, str]]) -> float:
        began, pg = time.process_time(), backend_cpu_s(backend)
        # fresh_database turns the throttle off for the HTTP benches; here it is part
        # of the cost, as deployed.
        with override_settings(INGEST_STEPS_WORKER=way == "worker", INGEST_THROTTLE_RATE="600/min"):
            for start in range(0, len(batch_bodies), per_cycle):
                post_all(batch_bodies[start : start + per_cycle])
                if way == "worker":
                    run_owed_steps()
        used = time.process_time() - began + backend_cpu_s(backend) - pg
        return 1000 * used / len(batch_bodies)

    post_all(bodies(len(devices) * 2))  # warm: imports, token cache, prepared statements
    run_owed_steps()
    costs: dict[str, list[float]] = {"inline": [], "worker": []}
    for _ in range(args.rounds):
        for way in ("inline", "worker"):
            costs[way].append(measure(way, bodies(args.batches)))
    inline, worker = (statistics.median(costs[w]) for w in ("inline", "worker"))
    for way, values in costs.items():
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"{way}: CPU ms per live batch (this process + its PostgreSQL backend): {each}")
    print(
        f"{args.devices} households, {args.batches} batches per way and round, "
        f"{per_cycle // len(devices)} batches per household per worker run"
    )
    print(f"ratio inline / worker: {inline / worker:.2f}")


if __name__ == "__main__":
    main()
