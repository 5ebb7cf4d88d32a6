"""Streaming-replica lag under live ingest, and what attaching a replica costs the primary.

    .venv/bin/python bench/replica_lag.py [--devices 1000] [--clients 16] [--seconds 20]
        [--rounds 3] [--no-sync] [--port 5460] [--replica-port 5461] [--server-port 18460]
        [--redis-url redis://127.0.0.1:6379/7]

1. A private PostgreSQL primary with production durability (fsync and full-page writes
   on; p1common.services.PrivatePostgres), migrated, with ``--devices`` devices and an
   ingest token each; a streaming replica of it made with pg_basebackup -R.
2. gunicorn with deploy/gunicorn.conf.py and Redis, on the primary. Closed loop:
   ``--clients`` threads post live batches in the edge's default shape (5 readings 2 s
   apart, each device's batches in time order) for ``--seconds``.
3. Each round has three phases: the replica running and caught up (asynchronous
   streaming, as DATABASE_REPLICA_URL needs it), while a sampler reads
   pg_stat_replication on the primary every SAMPLE_EVERY_S: the replay lag in bytes
   (pg_current_wal_lsn() - replay_lsn) and the write/flush/replay lag times the primary
   measures; then (unless --no-sync) the same replica made synchronous
   (synchronous_standby_names, each commit waits for the standby's flush: what a
   lossless promotion would need); then the replica stopped (the primary streams to
   nobody).
4. Every acknowledged sample is counted on the primary, and on the replica once it has
   replayed everything.

Prints batches/s per phase kind (median of the rounds, and the ratio to the phase
without a replica), ingest p50/p99, and the lag p50/p99/max.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
from p1common.services import PrivatePostgres, PrivateReplica  # noqa: E402

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
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per phase")
    parser.add_argument("--no-sync", action="store_true", help="skip the synchronous-replica phase")
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


NONE, ASYNC, SYNC = "without replica", "async replica", "sync replica"


@dataclass
class Phase:
    kind: str
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


def run_phase(
    kind: str, args: argparse.Namespace, server_url: str, fleet: Fleet, url: str
) -> Phase:
    phase = Phase(kind)
    stop = threading.Event()
    sampler = threading.Thread(target=sample_lag, args=(url, phase, stop), daemon=True)
    if kind != NONE:
        sampler.start()
    post_load(server_url, fleet, args.clients, args.seconds, phase)
    stop.set()
    if kind != NONE:
        sampler.join()
    return phase


def attach(primary: PrivatePostgres, replica: PrivateReplica, kind: str) -> None:
    """The replica stopped (NONE), or running, caught up and asynchronous or synchronous."""
    if replica.running:
        synchronous(primary, False)  # a synchronous primary would wait for a stopped standby
    if kind == NONE:
        replica.stop()
        return
    if not replica.running:
        replica.start()
    replica.wait_for_replay()
    if kind == SYNC:
        synchronous(primary, True)


def synchronous(primary: PrivatePostgres, on: bool) -> None:
    """Commits wait for the standby's flush (on), or not (off: asynchronous streaming)."""
    if on:
        primary.query("ALTER SYSTEM SET synchronous_standby_names = '*'")
    else:
        primary.query("ALTER SYSTEM RESET synchronous_standby_names")
    primary.query("SELECT pg_reload_conf()")
    wanted = "sync" if on else "async"
    deadline = time.monotonic() + 30
    while primary.query("SELECT sync_state FROM pg_stat_replication") != wanted:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the standby did not become {wanted}")
        time.sleep(SAMPLE_EVERY_S)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    args = parse_args()
    from p1common.processes import child_env, listening_socket, start_server

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
                warm_up = Phase(ASYNC)
                post_load(server.url, fleet, args.clients, 3.0, warm_up)
                kinds = [ASYNC, NONE] if args.no_sync else [ASYNC, SYNC, NONE]
                for n in range(args.rounds):
                    # Each round starts with the next kind: the tables grow during the
                    # run, and no kind should always come last.
                    for kind in kinds[n % len(kinds) :] + kinds[: n % len(kinds)]:
                        attach(primary, replica, kind)
                        phases.append(run_phase(kind, args, server.url, fleet, url))
                attach(primary, replica, ASYNC)
                acknowledged = warm_up.inserted + sum(p.inserted for p in phases)
                stored = Sample.objects.count()
                on_replica = int(replica.query("SELECT count(*) FROM telemetry_sample", DATABASE))
        finally:
            server.stop()
            sock.close()
    report(args, phases, stored, on_replica, acknowledged)
    shutil.rmtree(root)  # the server's log; kept when the run failed


def report(
    args: argparse.Namespace, phases: list[Phase], stored: int, on_replica: int, acked: int
) -> None:
    print(
        f"{args.devices} devices, {args.clients} clients, batches of {READINGS} readings, "
        f"{args.rounds} rounds x {args.seconds:g} s per phase"
    )
    groups = {kind: [p for p in phases if p.kind == kind] for kind in (NONE, ASYNC, SYNC)}
    baseline = statistics.median(p.rate for p in groups[NONE])
    for kind, group in groups.items():
        if not group:
            continue
        latencies = [x for p in group for x in p.latencies_ms]
        rates = ", ".join(f"{p.rate:.0f}" for p in group)
        median = statistics.median(p.rate for p in group)
        print(
            f"{kind:>15}: batches/s {rates} (median {median:.0f}, ratio {median / baseline:.2f}); "
            f"ingest p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms"
        )
    for kind in (ASYNC, SYNC):
        group = groups[kind]
        if not group:
            continue
        lag_bytes = [x for p in group for x in p.lag_bytes]
        print(
            f"{kind}: replay lag bytes ({len(lag_bytes)} samplings every "
            f"{SAMPLE_EVERY_S * 1000:g} ms) p50 {percentile(lag_bytes, 50):.0f}, "
            f"p99 {percentile(lag_bytes, 99):.0f}, max {max(lag_bytes):.0f}; "
            f"no lag time (idle) {sum(p.unmeasured for p in group)}"
        )
        for name in ("write", "flush", "replay"):
            values = [x for p in group for x in p.lag_ms[name]]
            print(
                f"{kind}: {name}_lag ms p50 {percentile(values, 50):.2f}, "
                f"p99 {percentile(values, 99):.2f}, max {max(values, default=float('nan')):.2f}"
            )
    print(f"samples acknowledged {acked}, on the primary {stored}, on the replica {on_replica}")
    if not acked == stored == on_replica:
        raise SystemExit("error: acknowledged, stored and replicated samples differ")


if __name__ == "__main__":
    main()
