"""A fleet of households on one server: live ingest at saturation, against the bare view.

    .venv/bin/python bench/fleet.py [--households 10000] [--readers 0.05] [--seconds 20]
        [--rounds 3] [--rate BATCHES_PER_S] [--database-url postgres://...]

1. A fresh database (PostgreSQL or TimescaleDB, as --database-url names) is migrated;
   every household gets a device, an ingest token and a read token.
2. gunicorn serves the project under deploy/gunicorn.conf.py as deployed (its worker
   class and count, its worker recycling (``--max-requests 0`` turns that off, as this
   bench did before the tenth session), Redis, the production ingest throttle), with the
   bare DRF view of bench/urls.py beside it, behind Caddy with the repository's Caddyfile
   as deployed (``--proxy caddy``, the default; plain HTTP on loopback instead of TLS,
   its request log to a file) or reached directly (``--proxy none``). Every wrk below,
   the floor's too, goes the same way. Access logging is off in gunicorn. Behind no
   proxy, a paced wrk's idle connections each hold one of gunicorn's sync workers until
   it writes its next request (up to the pacing interval): in service Caddy sends
   gunicorn whole requests only, so that measures an idle client, not the server.
3. A warm-up checks every household's token --warm-passes times (refused reads), as a
   server that has run for a while has them cached, posts a batch for every household
   (runs of WARM_INGEST_S, each going on where the one before stopped) and reads the
   dashboards' answers once (closed loop, 10 s); with the worker, it waits until the
   worker has done the warm-up's batches; then each round measures, one after the
   other:
   - the floor: wrk, closed loop, GET of the bare view (DRF, one Redis key);
   - the fleet: wrk (bench/fleet.lua) posting each household's live batch in the edge's
     default shape (five 2-second readings with every field the meter reports), closed
     loop to saturation, or paced at --rate batches/s (open loop), the households in
     turn from where the round before stopped; while a share of the households
     (--readers, spread through the list) read /v1/realtime every LIVE_REFRESH_S like
     an open dashboard, from a second wrk.
4. Prints households per box (batches/s x the edge's upload interval) and per core,
   p50/p99 of ingest and of the reads under that load, and the ratio of ingest batches/s
   to the floor's requests/s in the same round; medians over the rounds.
   With ``--steps worker`` (the default, as deployed) the ingest-steps worker runs
   beside the server (manage.py run_ingest_steps, resting between its chunks as
   deployed, ``--duty-percent``) and its cycles are timed: the longest cycle (rests
   included) plus the interval is how late capacity answers were; with ``inline``
   every request does its own steps.
5. Checks that every acknowledged sample is stored: the rows in telemetry_sample are at
   least the sum of the acknowledged "inserted" counts (a batch in flight when wrk stops
   may be stored without an answer), every answer inserted all its samples, and no
   answer was an error; once the worker has caught up, nothing is owed and the capacity
   quarters and months of CHECKED_HOUSEHOLDS households equal a rebuild from scratch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import migrate_and_setup, recreate_database  # noqa: E402

if TYPE_CHECKING:
    from p1common.processes import Child

CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
SCRIPT = ROOT / "bench" / "fleet.lua"
UPLOAD_INTERVAL_S = 10  # edgeclient.config.DEFAULT_UPLOAD_INTERVAL_S
LIVE_REFRESH_S = 2  # dashboard.pages.LIVE_REFRESH_MS
WARM_INGEST_S = 10
SAMPLES_PER_BATCH = 5
WRK_THREADS = 2
FLOOR_CONNECTIONS = 16
READ_CONNECTIONS = 16
RESULT_PREFIX = "fleet-result: "
GOALS = {"postgres-tables": 0.25, "timescale": 0.20}
CHECKED_HOUSEHOLDS = 25
DRAIN_TIMEOUT_S = 600
PROXY_READY_S = 20
WARM_LIMIT_S = 180


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--households", type=int, default=10_000)
    parser.add_argument("--readers", type=float, default=0.05, help="share reading realtime")
    parser.add_argument("--seconds", type=int, default=20, help="length of each measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32, help="ingest connections")
    parser.add_argument(
        "--rate", type=float, default=0, help="open loop: batches/s (0: closed loop)"
    )
    parser.add_argument("--steps", choices=("worker", "inline"), default="worker")
    parser.add_argument("--proxy", choices=("caddy", "none"), default="caddy")
    parser.add_argument(
        "--warm-passes",
        type=int,
        default=3,
        help="token checks per household before the rounds (at most WARM_LIMIT_S)",
    )
    parser.add_argument(
        "--interval", type=float, default=60, help="the worker's INGEST_STEPS_INTERVAL_S"
    )
    parser.add_argument(
        "--duty-percent",
        default="",
        help="the worker's INGEST_STEPS_DUTY_PERCENT (default: the deployment's; 100: its "
        "chunks back to back, as before the eleventh session)",
    )
    parser.add_argument(
        "--max-requests",
        default="",
        help="GUNICORN_MAX_REQUESTS for the server (default: deploy/gunicorn.conf.py's, "
        "as the deployment runs; 0: workers never recycled, as this bench ran before)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/p1fleet"),
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
    )
    return parser.parse_args()


@dataclass
class WrkResult:
    requests: int
    seconds: float
    answered: int
    failed: int
    acked_samples: int
    socket_errors: int
    timeouts: int
    statuses: str
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        return self.answered / self.seconds


@dataclass
class Round:
    floor: float
    fleet: WrkResult
    reads: WrkResult | None
    # CPU seconds of gunicorn (all its processes), of the worker and of the proxy during
    # the fleet.
    cpu: tuple[float, float, float]
    # gunicorn's CPU ms per request of the bare view.
    floor_cpu_ms: float


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(f) for f in fields[11:15]) / ticks


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _tree(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += _tree(int(child))
    return found


@dataclass
class ProcessTimes:
    server_pid: int
    worker_pid: int | None
    proxy_pid: int | None
    server: float
    worker: float
    proxy: float

    @classmethod
    def of(cls, server_pid: int, worker_pid: int | None, proxy_pid: int | None) -> ProcessTimes:
        server = sum(_cpu_s(p) for p in _tree(server_pid))
        return cls(
            server_pid,
            worker_pid,
            proxy_pid,
            server,
            _cpu_s(worker_pid) if worker_pid else 0.0,
            _cpu_s(proxy_pid) if proxy_pid else 0.0,
        )

    def since(self) -> tuple[float, float, float]:
        """CPU seconds since: gunicorn, the worker, the proxy."""
        now = ProcessTimes.of(self.server_pid, self.worker_pid, self.proxy_pid)
        return now.server - self.server, now.worker - self.worker, now.proxy - self.proxy


@contextlib.contextmanager
def proxy_in_front(proxy: str, upstream: str, work: Path) -> Iterator[tuple[str, int | None]]:
    """The URL the clients use and the proxy's pid: Caddy under the repository's
    Caddyfile (plain HTTP on a loopback port), or gunicorn itself."""
    if proxy == "none":
        yield upstream, None
        return
    if shutil.which("caddy") is None:
        sys.exit("error: caddy is not installed (apt-get install caddy), or use --proxy none")
    from p1common.processes import child_env, listening_socket, start_child, wait_until_serving

    probe = listening_socket(listen=False)
    port = probe.getsockname()[1]
    probe.close()
    config = work / "Caddyfile"
    config.write_text(
        "{\n\tadmin off\n"
        f"\tstorage file_system {work / 'caddy-data'}\n}}\n"
        f"import {ROOT / 'Caddyfile'}\n"
    )
    env = child_env(
        VPS_DOMAIN=f"http://127.0.0.1:{port}",
        APP_UPSTREAM=upstream.removeprefix("http://"),
        STATIC_ROOT=str(work / "static"),
        HOME=str(work),
        XDG_DATA_HOME=str(work / "xdg-data"),
        XDG_CONFIG_HOME=str(work / "xdg-config"),
    )
    command = ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"]
    caddy = start_child("caddy", command, env, log_path=work / "caddy.log", read="none")
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + PROXY_READY_S
        while True:
            try:
                wait_until_serving(url, timeout_s=PROXY_READY_S)
                break
            except Exception:
                if time.monotonic() > deadline or not caddy.running():
                    raise
                time.sleep(0.1)  # Caddy binds its port shortly after it starts
        yield url, caddy.pid
    finally:
        caddy.stop()


def make_households(count: int, path: Path) -> None:
    """Devices and tokens in bulk (issue_token per household would take minutes)."""
    from telemetry.models import Device, DeviceToken
    from telemetry.tokens import mint

    devices = Device.objects.bulk_create(
        [Device(device_id=f"fleet-{n:05d}") for n in range(count)], batch_size=2000
    )
    tokens, lines = [], []
    for device in devices:
        ingest = DeviceToken(device=device, label="edge")
        read = DeviceToken(device=device, label="dashboard")
        raw_ingest, raw_read = mint(ingest, "ingest"), mint(read, "read")
        tokens += [ingest, read]
        lines.append(f"{device.device_id} {raw_ingest} {raw_read}")
    DeviceToken.objects.bulk_create(tokens, batch_size=2000)
    path.write_text("\n".join(lines) + "\n")


def share_tokens(households: Path) -> None:
    """Every household's tokens in Redis as a server process leaves them after reading
    them from the database once (telemetry.token_cache): a server in service has them."""
    from telemetry import token_cache

    for line in households.read_text().splitlines():
        for raw in line.split()[1:]:
            assert token_cache.lookup(raw, record_use=False).token is not None


def sample_template(path: Path) -> None:
    """One sample in the edge's wire shape, every field, with Lua format slots for the
    sample time, the power and the three rising registers."""
    from p1common.samples import sample

    body = sample(datetime(2026, 1, 1, tzinfo=UTC))
    slots = {
        "ts": "%s",
        "power_w": "%d",
        "energy_import_kwh": "%.4f",
        "energy_import_t1_kwh": "%.4f",
        "energy_import_t2_kwh": "%.4f",
    }
    parts = []
    for name, value in body.items():
        parts.append(
            f'"{name}":'
            + (f'"{slots[name]}"' if name == "ts" else slots.get(name, json.dumps(value)))
        )
    path.write_text("{" + ",".join(parts) + "}\n")


def wrk(url: str, args: list[str], connections: int, seconds: int, first: int = 0) -> WrkResult:
    """bench/fleet.lua's run; ``first``: the household (0-based) its rotation begins at."""
    command = [
        "wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
        "-s", str(SCRIPT), url, "--", *args, str(WRK_THREADS), str(first),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith(RESULT_PREFIX)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    return WrkResult(**json.loads(line[len(RESULT_PREFIX) :]))


def floor_rate(url: str, seconds: int) -> float:
    return floor_run(url, seconds)[0]


def floor_run(url: str, seconds: int) -> tuple[float, int]:
    """Requests per second of the bare view, and how many it answered."""
    out = subprocess.run(
        ["wrk", f"-t{WRK_THREADS}", f"-c{FLOOR_CONNECTIONS}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"the bare view answered errors:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rate, int(re.search(r"(\d+) requests in", out).group(1))


def readers_file(households: Path, readers: int) -> Path:
    """The ``readers`` households with an open dashboard: spread evenly through the
    list, as whether a household watches has nothing to do with when it uploads. (The
    first ones in the list, as before the eleventh session, all upload in a round's
    first seconds: their answers' refreshes and recomputations came at once.)"""
    reader_file = households.with_name("readers.txt")
    every = households.read_text().splitlines()
    lines = every[:: max(1, len(every) // readers)][:readers] if readers else []
    reader_file.write_text("\n".join(lines) + "\n")
    return reader_file


def run_fleet(
    base: str,
    households: Path,
    template: Path,
    args: argparse.Namespace,
    readers: int,
    first: int,
) -> tuple[WrkResult, WrkResult | None]:
    """The ingest wrk (its rotation from household ``first``) and, beside it, the
    dashboards' wrk, over the same seconds."""
    reads: list[WrkResult] = []
    reader_file = readers_file(households, readers)

    def read_load() -> None:
        rate = readers / LIVE_REFRESH_S
        reads.append(
            wrk(
                base,
                ["read", str(reader_file), str(template), str(rate)],
                READ_CONNECTIONS,
                args.seconds,
            )
        )

    reader = threading.Thread(target=read_load) if readers else None
    if reader:
        reader.start()
    fleet = wrk(
        base,
        ["ingest", str(households), str(template), str(args.rate)],
        args.connections,
        args.seconds,
        first,
    )
    if reader:
        reader.join()
    return fleet, (reads[0] if reads else None)


def check_capacity_exact() -> list[str]:
    """Nothing owed, and the capacity of some households as a rebuild makes it."""
    from django.db import connection

    from capacity.materialize import rebuild
    from telemetry.models import PendingBatch

    problems = []
    owed = PendingBatch.objects.count()
    if owed:
        problems.append(f"{owed} batches still owed their steps")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT device_id FROM capacity_quarter ORDER BY device_id LIMIT %s",
            [CHECKED_HOUSEHOLDS],
        )
        pks = [row[0] for row in cursor.fetchall()]

    def capacity_of(pk: int) -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT bucket, round(kw::numeric, 9), round(coverage::numeric, 9), sample_count "
                "FROM capacity_quarter WHERE device_id = %s ORDER BY bucket",
                [pk],
            )
            rows = cursor.fetchall()
            cursor.execute(
                "SELECT month_start, round(peak_kw::numeric, 9), peak_bucket FROM capacity_month "
                "WHERE device_id = %s ORDER BY month_start",
                [pk],
            )
            return rows + cursor.fetchall()

    differ = 0
    for pk in pks:
        before = capacity_of(pk)
        rebuild(pk)
        differ += capacity_of(pk) != before
    print(f"capacity of {len(pks)} households equal to a rebuild: {len(pks) - differ}")
    if differ or not pks:
        problems.append(f"capacity of {differ} of {len(pks)} households differs from a rebuild")
    return problems


def caught_up(worker: Child) -> None:
    """Wait until the worker has done the warm-up's batches. They are every household's
    first, posted within seconds as no service posts them (10,000 households' batches of
    a minute come through the minute); a cycle doing them alongside round 1 measured
    that burst, not the live load (0.10 against 0.24-0.26 in the rounds after, on
    2026-12-04). The rounds' own batches keep the worker's cycles in every round."""
    from p1common.processes import WORKER_CYCLE
    from telemetry.models import PendingBatch

    while PendingBatch.objects.exists():
        seen = len(worker.log.matching(WORKER_CYCLE))
        worker.log.wait_for(WORKER_CYCLE, DRAIN_TIMEOUT_S, count=seen + 1)


def stored_rows() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM telemetry_sample")
        return cursor.fetchone()[0]


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("error: wrk is not installed (apt-get install wrk)")
    os.environ.update(
        DATABASE_URL=args.database_url,
        REDIS_URL=args.redis_url,
        DJANGO_SETTINGS_MODULE="bench.settings",
        GUNICORN_ACCESS_LOG="",
        # The warm-up's refusals would each log a warning line.
        LOG_LEVEL="error",
        GUNICORN_MAX_REQUESTS=args.max_requests,
        INGEST_STEPS_WORKER="on" if args.steps == "worker" else "off",
        INGEST_STEPS_INTERVAL_S=f"{args.interval:g}",
        INGEST_STEPS_DUTY_PERCENT=args.duty_percent,
    )
    recreate_database(args.database_url)
    migrate_and_setup("bench.settings")
    from django.core.cache import cache

    from bench.urls import BENCH_KEY
    from p1common.processes import WORKER_CYCLE, run_server, start_steps_worker
    from telemetry.storage import plan_for

    cache.clear()
    cache.set(BENCH_KEY, {"power_w": 1250.5, "ts": "2026-01-01T00:00:00+00:00"}, None)
    plan = plan_for().name
    work = Path(tempfile.mkdtemp(prefix="p1fleet-"))
    households, template = work / "households.txt", work / "sample.tmpl"
    make_households(args.households, households)
    share_tokens(households)
    sample_template(template)
    readers = round(args.households * args.readers)
    rounds: list[Round] = []
    worker = None
    if args.steps == "worker":
        worker = start_steps_worker(args.interval, log_path=work / "worker.log", LOG_LEVEL="info")
    try:
        with (
            run_server(workers=None, threads=None, config=CONFIG) as server,
            proxy_in_front(args.proxy, server.url, work) as (base, proxy_pid),
        ):
            # Warm up: every worker imports its code paths, and the token caches hold
            # every household's token as after a while in service.
            floor_rate(f"{base}/bench/redis-key", 2)
            # In service each household's token is checked every upload interval, so
            # every process has it after a few minutes: the rounds measure that, not the
            # first minute after a restart.
            checks, began = 0, time.monotonic()
            while (
                checks < args.warm_passes * args.households
                and time.monotonic() - began < WARM_LIMIT_S
            ):
                checks += wrk(base, ["warm", str(households), str(template), "0"], 16, 10).answered
            print(f"warm-up: {checks / args.households:.1f} token checks per household")
            # Every household has uploaded before the rounds, as in service: a round then
            # measures live batches, not households' first ones (and no dashboard reads
            # an answer of a household without data, which no batch refreshes).
            posted = 0
            while posted < args.households:
                posted += wrk(
                    base,
                    ["ingest", str(households), str(template), "0"],
                    args.connections,
                    WARM_INGEST_S,
                    posted,
                ).answered
            print(f"warm-up: every household uploaded ({posted:,} batches)")
            if readers:
                # An open dashboard has read its answer before: round 1 measures the
                # reads a dashboard makes in service, not every answer's first one.
                reader_file = readers_file(households, readers)
                wrk(base, ["read", str(reader_file), str(template), "0"], READ_CONNECTIONS, 10)
            if worker is not None:
                caught_up(worker)
            for _ in range(args.rounds):
                idle = ProcessTimes.of(server.process.pid, None, None)
                floor, answered = floor_run(f"{base}/bench/redis-key", args.seconds)
                floor_cpu = 1000 * idle.since()[0] / answered
                busy = ProcessTimes.of(
                    server.process.pid, worker.pid if worker else None, proxy_pid
                )
                fleet, reads = run_fleet(base, households, template, args, readers, posted)
                posted += fleet.answered
                rounds.append(Round(floor, fleet, reads, busy.since(), floor_cpu))
                print(_round_line(rounds[-1]), flush=True)
            pids = _tree(server.process.pid)
            rss = [_rss_mb(p) for p in pids]
            print(
                f"memory: gunicorn {sum(rss):.0f} MB in {len(pids)} processes "
                f"(largest {max(rss):.0f} MB)"
                + (f", worker {_rss_mb(worker.pid):.0f} MB" if worker else "")
            )
        if worker is not None:
            idle = len(worker.log.matching(f"{WORKER_CYCLE}0 devices"))
            worker.log.wait_for(f"{WORKER_CYCLE}0 devices", DRAIN_TIMEOUT_S, count=idle + 1)
            cycles = [float(m) for m in re.findall(r"devices, .*?, ([\d.]+) s", worker.log.text())]
            print(
                f"worker (interval {args.interval:g} s): {len(cycles)} cycles, longest "
                f"{max(cycles):.2f} s: capacity answers late by at most "
                f"{args.interval + max(cycles):.1f} s"
            )
    finally:
        if worker is not None:
            worker.stop()
    stored = stored_rows()
    acked = sum(r.fleet.acked_samples for r in rounds)
    answered = sum(r.fleet.answered for r in rounds)
    failed = sum(r.fleet.failed + (r.reads.failed if r.reads else 0) for r in rounds)
    _report(args, plan, readers, rounds)
    # Warm-up answers are not counted, so their rows are extra, as are unanswered ones.
    print(f"stored rows {stored:,} >= acknowledged samples {acked:,}: {stored >= acked}")
    problems = []
    if stored < acked:
        problems.append("fewer rows stored than acknowledged")
    if acked != answered * SAMPLES_PER_BATCH:
        problems.append(f"{answered * SAMPLES_PER_BATCH - acked} samples answered as duplicates")
    if failed:
        problems.append(f"{failed} error answers")
    problems += check_capacity_exact()
    if problems:
        sys.exit("FAILED: " + "; ".join(problems))


def _round_line(r: Round) -> str:
    floor, fleet, reads = r.floor, r.fleet, r.reads
    line = (
        f"floor {floor:,.0f} req/s | ingest {fleet.rate:,.0f} batches/s "
        f"p50 {fleet.p50_ms:.1f} ms p99 {fleet.p99_ms:.1f} ms | ratio {fleet.rate / floor:.3f}"
    )
    if reads:
        line += f" | reads {reads.rate:,.0f}/s p50 {reads.p50_ms:.1f} ms p99 {reads.p99_ms:.1f} ms"
    batches = fleet.answered or 1
    line += (
        f" | CPU ms per batch: server {1000 * r.cpu[0] / batches:.2f}, "
        f"worker {1000 * r.cpu[1] / batches:.2f}, proxy {1000 * r.cpu[2] / batches:.2f} "
        f"(bare view {r.floor_cpu_ms:.2f} per request)"
    )
    return line


def _report(args: argparse.Namespace, plan: str, readers: int, rounds: list[Round]) -> None:
    median = statistics.median
    rate = median(r.fleet.rate for r in rounds)
    ratio = median(r.fleet.rate / r.floor for r in rounds)
    cpus = len(os.sched_getaffinity(0))
    loop = f"open loop at {args.rate:g} batches/s" if args.rate else "closed loop"
    print(
        f"\n{plan}: {args.households:,} households, {readers} reading, {loop}, "
        f"{args.connections} connections, {len(rounds)} rounds of {args.seconds} s, {cpus} CPUs, "
        f"GUNICORN_MAX_REQUESTS={args.max_requests or '(the deployment default)'}, "
        f"INGEST_STEPS_DUTY_PERCENT={args.duty_percent or '(the deployment default)'}"
    )
    print(f"floor (bare DRF view, one Redis key): {median(r.floor for r in rounds):,.0f} req/s")
    print(
        f"ingest: {rate:,.0f} batches/s = {rate * UPLOAD_INTERVAL_S:,.0f} households per box, "
        f"{rate * UPLOAD_INTERVAL_S / cpus:,.0f} per core; "
        f"p50 {median(r.fleet.p50_ms for r in rounds):.1f} ms, "
        f"p99 {median(r.fleet.p99_ms for r in rounds):.1f} ms"
    )
    read_rounds = [r.reads for r in rounds if r.reads]
    if read_rounds:
        print(
            f"realtime under load: {median(r.rate for r in read_rounds):,.0f} req/s, p50 "
            f"{median(r.p50_ms for r in read_rounds):.1f} ms, p99 "
            f"{median(r.p99_ms for r in read_rounds):.1f} ms (goal p99 < 25 ms)"
        )
    goal = GOALS.get(plan)
    print(
        f"ratio ingest batches/s / floor req/s: {ratio:.3f}"
        + (f" (goal >= {goal})" if goal else "")
    )


if __name__ == "__main__":
    main()
