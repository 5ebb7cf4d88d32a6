"""The demo's history write: demo.bulkload against the ingest path, in one run.

    .venv/bin/python bench/demo_backfill.py [--days 14] [--database-url postgres://...]

1. A fresh database: SQLite in a temporary DATA_DIR (the demo's embedded default), or
   the PostgreSQL database named by --database-url (dropped and created).
2. ``--days`` of demo history (every 5 minutes) is generated once, outside the clock.
3. Baseline: the samples go through telemetry.pipeline.ingest_batch in the demo's chunk
   size, as an upload of the same rows would, then one capacity rebuild.
   Measured: demo.bulkload.insert_history in the same chunks, then one capacity rebuild.
   Each phase writes to a device of its own; the phases alternate, twice each, because
   this machine is shared and noisy. The figure is the ratio of the medians.
4. Then the demo's whole first-run history (13 months, generation included) once, with
   its wall and CPU time.
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

from bench.common import migrate_and_setup, recreate_database  # noqa: E402

END = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
ROUNDS = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14, help="history per phase")
    parser.add_argument("--database-url", help="PostgreSQL instead of SQLite")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.pop("REDIS_URL", None)
    with tempfile.TemporaryDirectory(prefix="p1-bench-demo-") as data_dir:
        if args.database_url:
            recreate_database(args.database_url)
            os.environ["DATABASE_URL"] = args.database_url
        else:
            os.environ.pop("DATABASE_URL", None)
            os.environ["DATA_DIR"] = data_dir
        migrate_and_setup()
        run(args)


def run(args: argparse.Namespace) -> None:

    from zoneinfo import ZoneInfo

    from django.db import connection

    from capacity.materialize import rebuild
    from demo import history
    from demo.bulkload import insert_history
    from telemetry.models import Device
    from telemetry.pipeline import ingest_batch

    tz = ZoneInfo("Europe/Brussels")
    seconds = history.grid(END - timedelta(days=args.days), END, history.STEP_S)
    columns = history.generate(0, seconds, tz)
    chunks = [
        [None if c is None else c[lo : lo + history.CHUNK] for c in columns]
        for lo in range(0, len(seconds), history.CHUNK)
    ]
    paths = {
        "ingest path": lambda device, chunk: ingest_batch(device, chunk),
        "demo.bulkload": lambda device, chunk: insert_history(device.pk, chunk),
    }
    times: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(ROUNDS):
        for name, insert in paths.items():
            device = Device.objects.create(
                device_id=f"bench-{round_}-{len(times[name])}-{name[:4]}"
            )
            began = time.perf_counter()
            for chunk in chunks:
                insert(device, chunk)
            rebuild(device.pk)
            times[name].append(time.perf_counter() - began)
    print(f"{connection.vendor}: {len(seconds)} samples ({args.days} days), median of {ROUNDS}")
    for name, values in times.items():
        each = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:14} {statistics.median(values):7.2f} s  ({each})")
    ratio = statistics.median(times["ingest path"]) / statistics.median(times["demo.bulkload"])
    print(f"  demo.bulkload is {ratio:.1f}x as fast as the ingest path")

    device = Device.objects.create(device_id="bench-year")
    wall, cpu = time.perf_counter(), time.process_time()
    inserted = history.backfill(device, end=END, months=13)
    print(
        f"13-month first-run history: {inserted} samples in {time.perf_counter() - wall:.1f} s "
        f"wall, {time.process_time() - cpu:.1f} s CPU of this process"
    )


if __name__ == "__main__":
    main()
