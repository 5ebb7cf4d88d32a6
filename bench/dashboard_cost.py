"""CPU of open dashboards beside live ingest: the realtime answer refreshed by each batch
against dropped by it.

    .venv/bin/python bench/dashboard_cost.py [--households 200] [--readers 0.25]
        [--seconds 600] [--rounds 3] [--database-url postgres://...]

A fresh database and Redis; HOUSEHOLDS households with an ingest and a read token, and
two hours of history each. Simulated time runs in steps of LIVE_REFRESH_S: every
household posts its live batch (the edge's default: five 2-second readings with every
field) every UPLOAD_S, the households in turn; the watched share (--readers) reads
/v1/realtime at every step like an open dashboard; the ingest-steps worker's cycle runs
every CYCLE_S. Everything goes through Django's full request path in this process, and
CPU seconds are counted: this process's and its PostgreSQL backend's (/proc). Two ways,
alternating in every round:
- refresh (as deployed): a batch that appends to the running quarter leaves the answer
  cached, made from the cached basis and the batch (capacity.realtime);
- drop (the receipt step before): every batch drops the answer, and the next read
  recomputes it. The worker's step is the same in both ways.
Prints CPU ms per simulated second and per live batch (its reads included), how many
reads found no cached answer, and the ratio drop / refresh.
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
from bench.live_cost import backend_cpu_s  # noqa: E402

UPLOAD_S = 10  # edgeclient.config.DEFAULT_UPLOAD_INTERVAL_S
LIVE_REFRESH_S = 2  # dashboard.pages.LIVE_REFRESH_MS
CYCLE_S = 60  # settings.INGEST_STEPS_INTERVAL_S's default
SAMPLES = 5
HISTORY = timedelta(hours=2)
HISTORY_BATCH = 3600
WAYS = {
    "refresh": ["capacity.realtime.refresh_after_receipt"],
    "drop": ["capacity.realtime.forget_after_batches"],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=200)
    parser.add_argument("--readers", type=float, default=0.25, help="share watched")
    parser.add_argument("--seconds", type=int, default=600, help="simulated, per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/p1dashcost"
        ),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.environ["ALLOWED_HOSTS"] = "*"
    fresh_database(args.database_url, args.redis_url)
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client, override_settings

    from capacity.realtime import realtime_cache_key
    from p1common.samples import sample
    from telemetry.models import Device
    from telemetry.pipeline import run_owed_steps
    from telemetry.tokens import issue_token

    devices = [Device.objects.create(device_id=f"dash-{n:04d}") for n in range(args.households)]
    ingest = [issue_token(d, "ingest")[1] for d in devices]
    read = [issue_token(d, "read")[1] for d in devices]
    watched = list(range(0, args.households, max(1, round(1 / args.readers))))
    client = Client()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def post(device: int, samples: list[dict]) -> None:
        response = client.post(
            "/v1/ingest",
            json.dumps({"samples": samples}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {ingest[device]}",
        )
        assert response.status_code == 200, response.content

    # Each way and round takes the next stretch of simulated time, all of it in the past.
    span = timedelta(seconds=args.seconds * 2 * args.rounds + UPLOAD_S)
    clock = [datetime.now(UTC) - span]
    with override_settings(INGEST_STEPS_WORKER=True, INGEST_THROTTLE_RATE="100000/min"):
        start = clock[0] - HISTORY
        for device in range(args.households):
            for first in range(0, int(HISTORY.total_seconds()) // 2, HISTORY_BATCH):
                post(
                    device,
                    [
                        sample(start + timedelta(seconds=2 * (first + k)))
                        for k in range(HISTORY_BATCH)
                    ],
                )
        run_owed_steps()

    def run(way: str) -> tuple[float, int, int, int]:
        """CPU ms, batches, reads, reads that found no answer, over args.seconds."""
        batches = reads = misses = 0
        began, pg = time.process_time(), backend_cpu_s(backend)
        with override_settings(
            INGEST_STEPS_WORKER=True,
            INGEST_THROTTLE_RATE="100000/min",
            INGEST_RECEIPT_STEPS=WAYS[way],
        ):
            for step in range(0, args.seconds, LIVE_REFRESH_S):
                now = clock[0] + timedelta(seconds=step)
                # This step's share of the households, each once per UPLOAD_S.
                for device in range(step // LIVE_REFRESH_S % 5, args.households, 5):
                    first = now - timedelta(seconds=UPLOAD_S) + timedelta(milliseconds=device)
                    post(
                        device,
                        [
                            sample(first + timedelta(seconds=2 * k), power_w=900.0 + step % 700)
                            for k in range(SAMPLES)
                        ],
                    )
                    batches += 1
                for device in watched:
                    if cache.get(realtime_cache_key(devices[device].device_id)) is None:
                        misses += 1
                    response = client.get(
                        "/v1/realtime", HTTP_AUTHORIZATION=f"Bearer {read[device]}"
                    )
                    assert response.status_code == 200, response.content
                    reads += 1
                if (step + LIVE_REFRESH_S) % CYCLE_S == 0:
                    run_owed_steps()
        used = time.process_time() - began + backend_cpu_s(backend) - pg
        clock[0] += timedelta(seconds=args.seconds)
        # The misses' own cache.get is the bench's, not the server's: a round trip each.
        return 1000 * used, batches, reads, misses

    run("refresh")  # warm: imports, token caches, prepared statements
    figures: dict[str, list[tuple[float, int, int, int]]] = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way in WAYS:
            figures[way].append(run(way))
    per_batch: dict[str, float] = {}
    for way, runs in figures.items():
        each = [cpu / batches for cpu, batches, _, _ in runs]
        per_batch[way] = statistics.median(each)
        per_second = statistics.median(cpu / args.seconds for cpu, _, _, _ in runs)
        missed = statistics.median(m / r for _, _, r, m in runs)
        print(
            f"{way}: CPU ms per live batch with its reads {', '.join(f'{v:.2f}' for v in each)}"
            f" (median {per_batch[way]:.2f}); per simulated second {per_second:.0f}; "
            f"reads without a cached answer {100 * missed:.1f}%"
        )
    print(
        f"{args.households} households, {len(watched)} watched, {args.seconds} s simulated "
        f"per way and round: {figures['refresh'][0][1]} batches, {figures['refresh'][0][2]} reads"
    )
    print(f"ratio drop / refresh: {per_batch['drop'] / per_batch['refresh']:.2f}")


if __name__ == "__main__":
    main()
