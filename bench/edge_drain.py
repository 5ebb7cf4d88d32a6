"""Draining a day's backlog from the edge spool, against posting it straight from memory.

    .venv/bin/python bench/edge_drain.py [--samples 43200] [--rounds 2] [--database-url ...]

1. A fresh PostgreSQL database is migrated; a device and an ingest token are created;
   gunicorn (2 workers) serves it on loopback, as bench/ingest.py does.
2. The backlog: 24 hours at 2 s polling (43,200 samples with every field), ending now.
3. Baseline: the same samples in the same batch sizes the uploader uses while draining
   (DRAIN_BATCH_SIZE, 1000) POSTed one after another with the edge's IngestClient, from
   memory: the cost of HTTP + the server, without the spool.
4. Drain: the samples are put in a fresh spool file (not timed), then ``upload_once`` runs
   until the spool is empty: reads, POSTs, durable deletes, exactly as run_edge's upload
   loop does (minus its waits, which are zero while a backlog drains).
The table is emptied between phases; phases alternate over the rounds because the
machine is shared. The figure is the median drain time (goal < 20 s) and its ratio to
the baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database  # noqa: E402
from bench.ingest import empty_table  # noqa: E402

POLL_S = 2
NORMAL_BATCH = 30
DRAIN_BATCH = 1000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=43_200, help="24 h at 2 s polling")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per phase")
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/p1bench_edge"
        ),
    )
    return parser.parse_args()


def make_backlog(count: int) -> list[dict]:
    from p1common.samples import sample

    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    return [sample(end - timedelta(seconds=POLL_S * (count - i))) for i in range(count)]


def run_baseline(client, samples: list[dict]) -> float:
    began = time.perf_counter()
    for start in range(0, len(samples), DRAIN_BATCH):
        response = client.post_batch(samples[start : start + DRAIN_BATCH])
        assert response.status_code == 200, response.text[:300]
    return time.perf_counter() - began


def run_drain(client, samples: list[dict], folder: Path) -> tuple[float, int]:
    from edgeclient.spool import Spool
    from edgeclient.uploader import DELIVERED, IDLE, upload_once

    path = folder / f"spool-{time.monotonic_ns()}.sqlite3"
    with Spool(path) as spool:
        spool.add_many(samples)
        requests = 0
        began = time.perf_counter()
        while True:
            result = upload_once(
                spool, client, batch_size=NORMAL_BATCH, drain_batch_size=DRAIN_BATCH
            )
            if result.state == IDLE:
                break
            assert result.state == DELIVERED, result
            requests += 1
        elapsed = time.perf_counter() - began
        assert spool.depth() == 0
    return elapsed, requests


def delivered_count(device) -> int:
    from telemetry.models import Sample

    return Sample.objects.filter(device=device).count()


def main() -> None:
    args = parse_args()
    fresh_database(args.database_url)
    from edgeclient.uploader import IngestClient
    from p1common.processes import run_server
    from telemetry.models import Device
    from telemetry.tokens import issue_token

    device = Device.objects.create(device_id="bench-edge")
    token = issue_token(device, "ingest")[1]
    samples = make_backlog(args.samples)
    warmup = make_backlog(args.samples + 4 * DRAIN_BATCH)[: 4 * DRAIN_BATCH]

    baselines: list[float] = []
    drains: list[float] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_server(workers=2, threads=1) as server,
        IngestClient(f"{server.url}/v1/ingest", token) as client,
    ):
        run_baseline(client, warmup)
        empty_table()
        for _ in range(args.rounds):
            baselines.append(run_baseline(client, samples))
            assert delivered_count(device) == len(samples)
            empty_table()
            elapsed, requests = run_drain(client, samples, Path(tmp))
            drains.append(elapsed)
            assert delivered_count(device) == len(samples)
            empty_table()

    drain, baseline = statistics.median(drains), statistics.median(baselines)
    hours = len(samples) * POLL_S / 3600
    print(f"backlog: {len(samples)} samples ({hours:g} h at {POLL_S} s), batches of {DRAIN_BATCH}, "
          f"{requests} requests per drain")  # fmt: skip
    print("baseline, POST from memory: " + _times(baselines))
    print("drain from the spool:       " + _times(drains))
    print(f"drain rate: {len(samples) / drain:,.0f} samples/s")
    print(f"ratio drain / baseline: {drain / baseline:.2f}")
    print(f"goal: drain under 20 s: {'met' if drain < 20 else 'NOT met'}")


def _times(values: list[float]) -> str:
    each = ", ".join(f"{v:.2f}" for v in values)
    return f"{each} s (median {statistics.median(values):.2f} s)"


if __name__ == "__main__":
    main()
