"""The chaos run itself: set the stack up, play the plan, drain, judge. Exit 0 only when
every reading the meter served is in the database exactly once (or was lost in the
instant of a kill, reported apart) and the quarantine is empty."""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from p1common.services import PrivatePostgres, PrivateRedis, ServiceMissing, free_port
from scripts.chaos import plan as chaos_plan
from scripts.chaos.accounting import (
    edge_troubles,
    judge,
    parse_served_log,
    report,
    spool_waits,
)
from scripts.chaos.observer import Observer
from scripts.chaos.stack import (
    Caddy,
    ChaosError,
    Edge,
    Gunicorn,
    base_env,
    manage,
    new_secret_key,
    start_meter,
)

DEVICE_ID = "chaos-p1"
# The last edge uploads what is left; a Retry-After of 15 s (DB_RETRY_AFTER_S) may
# come first if PostgreSQL was restarting.
DRAIN_TIMEOUT_S = 120.0
FINAL_LOOK_TIMEOUT_S = 30.0
METER_GONE = "meter unreachable"
EDGE_SETTINGS = {
    "POLL_INTERVAL_S": "1",
    "UPLOAD_INTERVAL_S": "2",
    # The default 60 s cap suits a household; a bounded run should not spend up to a
    # minute after each outage with the edge asleep.
    "BACKOFF_MAX_S": "5",
    "LOG_LEVEL": "info",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.chaos", description=__doc__.split("\n\n")[0]
    )
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument(
        "--bounded", action="store_true", help=f"one outage cycle ({chaos_plan.BOUNDED_S:g} s)"
    )
    length.add_argument("--minutes", type=float, help="a longer run, one cycle per 2.5 minutes")
    parser.add_argument("--seed", type=int, help="for the kill moments (default: random)")
    parser.add_argument("--keep", action="store_true", help="keep the logs after a pass")
    return parser.parse_args(argv)


class Timeline:
    """Seconds since set-up began, then (after ``begin``) since the chaos began: the
    plan's event times count from the moment the whole stack is up."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.phase = "setup"

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.phase = "chaos"

    def now(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str, at: float | None = None) -> None:
        moment = self.now() if at is None else at
        print(f"[{self.phase} {moment:6.1f} s] {text}", flush=True)

    def sleep_until(self, at_s: float) -> None:
        delay = at_s - self.now()
        if delay > 0:
            time.sleep(delay)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    duration = chaos_plan.BOUNDED_S if args.bounded else args.minutes * 60
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    try:
        events = chaos_plan.plan(duration, random.Random(seed))  # noqa: S311 - a replayable plan
    except ValueError as exc:
        print(f"error: --minutes: {exc}", file=sys.stderr)
        return 2
    kills = sum(e.action == chaos_plan.KILL_EDGE for e in events)
    print(f"chaos run: {duration:g} s, {kills} kills, seed {seed}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="p1-chaos-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user below it
    # SIGTERM ends the run like Ctrl-C: through the clean-up below. SIGINT too when the
    # shell started us in the background with it ignored.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    passed = False
    started = time.monotonic()
    try:
        passed = run(root, events, duration)
        return 0 if passed else 1
    except KeyboardInterrupt:
        print("interrupted: stopping every process", file=sys.stderr)
        return 130
    except (ChaosError, ServiceMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print(f"chaos run took {time.monotonic() - started:.0f} s (seed {seed})", flush=True)
        if passed and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"logs kept in {root}", flush=True)


def run(root: Path, events: list[chaos_plan.Event], duration: float) -> bool:
    logs = root / "logs"
    logs.mkdir()
    clock = Timeline()
    with ExitStack() as stack:
        pg = stack.enter_context(PrivatePostgres(root / "postgres"))
        cache = stack.enter_context(PrivateRedis(root / "redis"))
        db_url = pg.create_database("p1chaos")
        server_env = base_env(
            DJANGO_ENV="production",
            SECRET_KEY=new_secret_key(),
            ALLOWED_HOSTS="127.0.0.1",
            DATABASE_URL=db_url,
            REDIS_URL=cache.url(),
            DATA_DIR=str(root / "server-data"),
            STATIC_ROOT=str(root / "static"),
            LOG_LEVEL="info",
        )
        (root / "static").mkdir()
        manage("migrate", "--verbosity", "0", env=server_env)
        manage("create_device", DEVICE_ID, "--name", "Chaos", env=server_env)
        token = manage("issue_token", DEVICE_ID, "--scopes", "ingest", env=server_env).split()[-1]

        gunicorn = Gunicorn(free_port(), server_env, logs / "gunicorn.log")
        gunicorn.start()
        stack.callback(gunicorn.stop)
        caddy = Caddy(root / "caddy", free_port(), free_port(), gunicorn.port, logs / "caddy.log")
        caddy.start()
        stack.callback(caddy.stop)
        caddy.wait_ready()
        caddy.check_untrusted_without_root()
        clock.say(
            f"server up behind caddy at {caddy.url} (PostgreSQL {pg.port}, Redis {cache.port})"
        )

        edge_data = root / "edge"
        edge_data.mkdir()
        edge_base = base_env(P1_ROLE="edge", DATA_DIR=str(edge_data))
        sim = start_meter(edge_data, edge_base, logs / "simulator.log")
        stack.callback(sim.stop)
        spool_path = edge_data / "spool.sqlite3"
        edge = Edge(
            edge_base
            | sim.meter_env("v2")
            | EDGE_SETTINGS
            | {
                "VPS_INGEST_URL": f"{caddy.url}/v1/ingest",
                "VPS_DEVICE_TOKEN": token,
                "VPS_CA_BUNDLE": str(caddy.root_ca),  # the only trust added to certifi's
                "EDGE_SPOOL_PATH": str(spool_path),
            },
            logs / "edge.log",
        )
        observer = Observer(db_url, DEVICE_ID, spool_path)
        observer.start()
        stack.callback(observer.stop)
        edge.start()
        stack.callback(edge.stop)
        clock.say(f"simulate_p1 on {sim.address} (API v2, TLS), run_edge polling every 1 s")
        clock.begin()

        actions = {
            chaos_plan.STOP_GUNICORN: lambda _: gunicorn.stop(),
            chaos_plan.START_GUNICORN: lambda _: gunicorn.start(),
            chaos_plan.STOP_POSTGRES: lambda _: pg.stop(),
            chaos_plan.START_POSTGRES: lambda _: pg.start(),
            chaos_plan.STOP_REDIS: lambda _: cache.stop(),
            chaos_plan.START_REDIS: lambda _: cache.start(),
            chaos_plan.METER_OFFLINE: lambda event: sim.go_offline(event.seconds),
        }
        kills = play(events, clock, edge, actions)
        clock.sleep_until(duration)
        edge.check_alive()
        gone_before = edge.log_count(METER_GONE)
        sim.stop()  # from here on its log is complete
        served = parse_served_log(sim.served_log.read_text())
        clock.say(f"simulator stopped after {len(served)} answers; draining the spool")
        # Polls run one after another: once a poll failed, every earlier answer is spooled.
        # Only then can an empty spool (seen by a later look) mean "all uploaded".
        if not observer.wait_for(lambda: edge.log_count(METER_GONE) > gone_before, 30):
            raise ChaosError("run_edge did not notice that the meter had gone")
        looks = observer.spool_looks
        drained = lambda: observer.spool_looks > looks + 1 and observer.depth == 0  # noqa: E731
        if not observer.wait_for(drained, DRAIN_TIMEOUT_S):
            raise ChaosError(f"the spool did not drain in {DRAIN_TIMEOUT_S:g} s")
        code = edge.stop()
        if code != 0:
            raise ChaosError(f"run_edge exited with {code} on SIGTERM; see {edge.log}")
        observer.stop()
        # The last look, with everything settled; the verdict must not rest on an old one.
        if not observer.wait_for_look(FINAL_LOOK_TIMEOUT_S):
            raise ChaosError(f"could not read the database at the end; see {pg.log_path}")
        clock.say(f"drained; run_edge stopped cleanly after {edge.starts} starts")
        status = edge.status()
        verdict = judge(
            served,
            observer.stored,
            kills,
            int(status.get("quarantined", -1)),
            spool_waits(observer.first_stored, observer.spooled_at, observer.left_spool),
        )
        print(report(verdict), flush=True)
        troubles = edge_troubles(edge.log.read_text().splitlines())
        print("  edge log: " + ", ".join(f"{what} x{n}" for what, n in troubles.items()))
        for ts, killed_at in sorted(verdict.lost_at_kill.items()):
            moment = datetime.fromtimestamp(killed_at, UTC).isoformat(timespec="milliseconds")
            print(f"  lost at a kill: {ts} (kill at {moment})")
        return verdict.passed


def play(
    events: list[chaos_plan.Event],
    clock: Timeline,
    edge: Edge,
    actions: dict[str, Callable[[chaos_plan.Event], None]],
) -> list[float]:
    """Each event at its moment; returns the wall-clock times of the kills."""
    kills: list[float] = []
    total = sum(e.action == chaos_plan.KILL_EDGE for e in events)
    back_at: dict[str, float] = {}  # a stop's action -> the earliest moment to start again
    for event in events:
        at = event.at_s
        if event.action in chaos_plan.STARTS:
            at = max(at, back_at.pop(chaos_plan.STARTS[event.action], at))
        clock.sleep_until(at)
        began = clock.now()
        if event.action == chaos_plan.KILL_EDGE:
            pid = edge.child.pid
            kills.append(edge.kill())
            edge.start()
            clock.say(f"SIGKILL run_edge (pid {pid}), {len(kills)} of {total}; restarted", began)
            continue
        edge.check_alive()
        actions[event.action](event)
        if event.seconds:
            back_at[event.action] = clock.now() + event.seconds
        clock.say(event.action + (f" for {event.seconds:g} s" if event.seconds else ""), began)
    return kills
