"""Streaming-replica lag under live ingest, and what attaching a replica costs the primary.

    .venv/bin/python bench/replica_lag.py [--devices 1000] [--clients 16] [--seconds 20]
        [--rounds 2] [--port 5460] [--replica-port 5461] [--server-port 18460]
        [--redis-url redis://127.0.0.1:6379/7]

1. A private PostgreSQL primary with production durability (fsync and full-page writes
   on; p1common.services.PrivatePostgres), migrated, with ``--devices`` devices and an
   ingest token each; a streaming replica of it made with pg_basebackup -R.
2. gunicorn with deploy/gunicorn.conf.py and Redis, on the primary. Closed loop:
   ``--clients`` threads post live batches in the edge's default shape (5 readings 2 s
   apart, each device's batches in time order) for ``--seconds``.
3. Rounds alternate: the replica stopped (the primary streams to nobody), then the
   replica running and caught up, while a sampler reads pg_stat_replication on the
   primary every SAMPLE_EVERY_S: the replay lag in bytes (pg_current_wal_lsn() -
   replay_lsn) and the write/flush/replay lag times the primary measures.
4. Every acknowledged sample is counted on the primary, and on the replica once it has
   replayed everything.

Prints batches/s with and without the replica (median of the rounds and their ratio),
ingest p50/p99, and the lag p50/p99/max.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database  # noqa: E402

READINGS = 5  # the edge's default batch: UPLOAD_INTERVAL_S / POLL_INTERVAL_S
POLL_S = 2
SAMPLE_EVERY_S = 0.05
HTTP_TIMEOUT_S = 30
DATABASE = "p1replica_bench"
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"

_LAG_SQL = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn),
       extract(epoch FROM write_lag), extract(epoch FROM flush_lag),
       extract(epoch FROM replay_lag)
FROM pg_stat_replication
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16, help="closed-loop client threads")
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per phase")
    parser.add_argument("--port", type=int, default=5460, help="the primary's port")
    parser.add_argument("--replica-port", type=int, default=5461)
    parser.add_argument("--server-port", type=int, default=18460)
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7")
    )
    return parser.parse_args()


class Fleet:
    """Each device's next batch: READINGS samples POLL_S apart, after its last one."""

    def __init__(self, tokens: list[str], start: datetime) -> None:
        self.tokens = tokens
        self.next_ts = [start] * len(tokens)
        self._turn = 0
        self._lock = threading.Lock()

    def next_batch(self) -> tuple[str, bytes]:
        from p1common.samples import sample

        with self._lock:
            device = self._turn % len(self.tokens)
            self._turn += 1
            first = self.next_ts[device]
            self.next_ts[device] = first + timedelta(seconds=READINGS * POLL_S)
        batch = [sample(first + timedelta(seconds=i * POLL_S)) for i in range(READINGS)]
        return self.tokens[device], json.dumps({"samples": batch}).encode()


@dataclass
class Phase:
    replica: bool
    batches: int = 0
    inserted: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    lag_bytes: list[float] = field(default_factory=list)
    lag_ms: dict[str, list[float]] = field(
        default_factory=lambda: {"write": [], "flush": [], "replay": []}
    )
    unmeasured: int = 0  # samplings where the primary reported no lag time (idle)

    @property
    def rate(self) -> float:
        return self.batches / self.seconds


def post_load(server_url: str, fleet: Fleet, clients: int, seconds: float, phase: Phase) -> None:
    import httpx

    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def work() -> None:
        done, inserted, latencies = 0, 0, []
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
            start.wait()
            while time.perf_counter() < deadline[0]:
                token, body = fleet.next_batch()
                began = time.perf_counter()
                headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                response = client.post(f"{server_url}/v1/ingest", content=body, headers=headers)
                latencies.append((time.perf_counter() - began) * 1000)
                response.raise_for_status()
                done += 1
                inserted += response.json()["inserted"]
        with lock:
            phase.batches += done
            phase.inserted += inserted
            phase.latencies_ms += latencies

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for t in threads:
        t.join()
    phase.seconds = time.perf_counter() - began


def sample_lag(primary_url: str, phase: Phase, stop: threading.Event) -> None:
    import psycopg

    with psycopg.connect(primary_url, autocommit=True) as conn:
        while not stop.wait(SAMPLE_EVERY_S):
            rows = conn.execute(_LAG_SQL).fetchall()
            if len(rows) != 1:
                raise RuntimeError(f"expected one standby in pg_stat_replication, got {rows}")
            lag_bytes, write, flush, replay = rows[0]
            phase.lag_bytes.append(float(lag_bytes or 0))
            if replay is None:
                phase.unmeasured += 1
                continue
            for name, value in (("write", write), ("flush", flush), ("replay", replay)):
                if value is not None:
                    phase.lag_ms[name].append(float(value) * 1000)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    args = parse_args()
    from p1common.processes import child_env, listening_socket, start_server
    from p1common.services import PrivatePostgres, PrivateReplica

    root = Path(tempfile.mkdtemp(prefix="p1-replica-bench-"))
    # WAL kept for a stopped replica, so it catches up by streaming instead of needing
    # a new base backup.
    primary = PrivatePostgres(port=args.port, durable=True, settings={"wal_keep_size": "2GB"})
    with primary:
        url = primary.url(DATABASE)
        fresh_database(url, args.redis_url)
        from telemetry.models import Device, Sample
        from telemetry.tokens import issue_token

        devices = Device.objects.bulk_create(
            Device(device_id=f"bench-{n}") for n in range(args.devices)
        )
        tokens = [issue_token(d, "ingest")[1] for d in devices]
        fleet = Fleet(tokens, datetime.now(UTC) - timedelta(hours=3))

        replica = PrivateReplica(primary, port=args.replica_port)
        env = child_env(
            DATABASE_URL=url,
            REDIS_URL=args.redis_url,
            INGEST_THROTTLE_RATE="off",
            GUNICORN_ACCESS_LOG="",
        )
        sock = listening_socket(args.server_port)
        server = start_server(sock, env, config=GUNICORN_CONF, log_path=root / "gunicorn.log")
        phases: list[Phase] = []
        try:
            with replica:
                replica.wait_for_replay()
                warm_up = Phase(True)
                post_load(server.url, fleet, args.clients, 3.0, warm_up)
                for _ in range(args.rounds):
                    replica.stop()
                    without = Phase(False)
                    post_load(server.url, fleet, args.clients, args.seconds, without)
                    phases.append(without)

                    replica.start()
                    replica.wait_for_replay()
                    with_replica = Phase(True)
                    stop = threading.Event()
                    sampler = threading.Thread(
                        target=sample_lag, args=(url, with_replica, stop), daemon=True
                    )
                    sampler.start()
                    post_load(server.url, fleet, args.clients, args.seconds, with_replica)
                    stop.set()
                    sampler.join()
                    phases.append(with_replica)
                replica.wait_for_replay()
                acknowledged = warm_up.inserted + sum(p.inserted for p in phases)
                stored = Sample.objects.count()
                on_replica = int(replica.query("SELECT count(*) FROM telemetry_sample", DATABASE))
        finally:
            server.stop()
            sock.close()
    report(args, phases, stored, on_replica, acknowledged)


def report(
    args: argparse.Namespace, phases: list[Phase], stored: int, on_replica: int, acked: int
) -> None:
    without = [p for p in phases if not p.replica]
    with_replica = [p for p in phases if p.replica]
    rate_without = statistics.median(p.rate for p in without)
    rate_with = statistics.median(p.rate for p in with_replica)
    print(
        f"{args.devices} devices, {args.clients} clients, batches of {READINGS} readings, "
        f"{args.rounds} x {args.seconds:g} s per phase"
    )
    for name, group in (("without replica", without), ("with replica   ", with_replica)):
        latencies = [x for p in group for x in p.latencies_ms]
        rates = ", ".join(f"{p.rate:.0f}" for p in group)
        print(
            f"{name}: batches/s {rates} (median {statistics.median(p.rate for p in group):.0f}); "
            f"ingest p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms"
        )
    print(f"ratio with / without replica: {rate_with / rate_without:.2f}")
    lag_bytes = [x for p in with_replica for x in p.lag_bytes]
    print(
        f"replay lag, bytes ({len(lag_bytes)} samplings every {SAMPLE_EVERY_S * 1000:g} ms): "
        f"p50 {percentile(lag_bytes, 50):.0f}, p99 {percentile(lag_bytes, 99):.0f}, "
        f"max {max(lag_bytes):.0f}"
    )
    for name in ("write", "flush", "replay"):
        values = [x for p in with_replica for x in p.lag_ms[name]]
        print(
            f"{name}_lag ms: p50 {percentile(values, 50):.2f}, p99 {percentile(values, 99):.2f}, "
            f"max {max(values, default=float('nan')):.2f}"
        )
    unmeasured = sum(p.unmeasured for p in with_replica)
    print(f"samplings without a lag time (standby idle): {unmeasured}")
    print(f"samples acknowledged {acked}, on the primary {stored}, on the replica {on_replica}")
    if not acked == stored == on_replica:
        raise SystemExit("error: acknowledged, stored and replicated samples differ")


if __name__ == "__main__":
    main()
