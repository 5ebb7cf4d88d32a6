"""Second by second, from the request log Caddy wrote during bench/fleet.py: where in a
round the slow requests were.

    .venv/bin/python bench/fleet_seconds.py /tmp/p1fleet-*/caddy.log [--slow-ms 25]

bench/fleet.py keeps its working directory (printed nowhere, the newest /tmp/p1fleet-*)
with Caddy's log and the worker's. Per second that saw live batches or dashboard reads:
the reads' count, p50 and p99 and how many took longer than --slow-ms, the batches'
count, p50 and p99, and the bare view's requests (the floor run between rounds). A
request is counted in the second it began (its end minus its duration). Set beside the
worker's cycle lines (worker.log: each ends at its timestamp and took the seconds it
names), it shows whether the slow seconds are a round's start, the worker's cycle or
neither.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

# Caddy's console encoder: "2026/12/03 18:01:51.700\tINFO\thttp.log.access.log0\t...\t{json}"
ACCESS_MARK = "handled request"
KINDS = {"/v1/realtime": "read", "/v1/ingest": "ingest", "/bench/redis-key": "bare"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="caddy.log of a bench/fleet.py run")
    parser.add_argument("--slow-ms", type=float, default=25.0, help="a slow read (ms)")
    return parser.parse_args()


def kind_of(uri: str) -> str | None:
    for prefix, kind in KINDS.items():
        if uri.startswith(prefix):
            return kind
    return None


def requests(path: Path) -> list[tuple[float, str, float]]:
    """(start as a timestamp, kind, duration in ms) of each bench request in the log."""
    found = []
    with path.open() as log:
        for line in log:
            if ACCESS_MARK not in line:
                continue
            stamp = line.split("\t", 1)[0]
            entry = json.loads(line[line.index("{") :])
            kind = kind_of(entry["request"]["uri"])
            if kind is None:
                continue
            ended = datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp()
            duration_ms = float(entry["duration"]) * 1000
            found.append((ended - duration_ms / 1000, kind, duration_ms))
    return found


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else 0.0


def main() -> None:
    args = parse_args()
    if not args.log.is_file():
        sys.exit(f"error: {args.log}: no such log")
    seconds: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for began, kind, duration_ms in requests(args.log):
        seconds[int(began)][kind].append(duration_ms)
    print(f"{'second':8}  reads p50   p99  slow | batches p50   p99 | bare")
    for second in sorted(seconds):
        row = seconds[second]
        reads, batches = row["read"], row["ingest"]
        if not reads and not batches:
            continue
        slow = sum(ms > args.slow_ms for ms in reads)
        print(
            f"{datetime.fromtimestamp(second):%H:%M:%S}  {len(reads):5d} "
            f"{percentile(reads, 0.5):5.1f} {percentile(reads, 0.99):5.1f} {slow:5d} | "
            f"{len(batches):7d} {percentile(batches, 0.5):5.1f} {percentile(batches, 0.99):5.1f}"
            f" | {len(row['bare'])}"
        )


if __name__ == "__main__":
    main()
