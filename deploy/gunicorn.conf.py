"""gunicorn settings for the P1 Platform server, in the container and under systemd alike.

    gunicorn -c deploy/gunicorn.conf.py p1platform.wsgi:application

Every value can be overridden from the environment (the compose stack's .env, or the
systemd unit's EnvironmentFile); command-line flags override this file. The worker
class and the default thread count were chosen by measurement: docs/adr/0003 and
bench/worker_class.py.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile


def _int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name}: must be at least {minimum}, got {value}")
    return value


def _cpu_count() -> int:
    """CPUs this process may run on (a container's cpuset), not the host's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


CPUS = _cpu_count()

# Inside the compose network Caddy reaches the app on port 8000; under systemd the unit
# sets GUNICORN_BIND=127.0.0.1:8000 so only the local Caddy can connect.
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000").split()

# sync: measured (ADR 0003). With 2 x CPU + 1 processes it serves realtime reads with
# the lowest tail latency (p99 under 10 ms where gthread gave 28 ms) and keeps them
# flowing while ingest batches are written, at the cost of memory (about 90 MB each).
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync").strip() or "sync"
THREADED = worker_class == "gthread"
threads = _int("GUNICORN_THREADS", 4 if THREADED else 1)
# sync: gunicorn's classic 2 x CPU + 1, at most 9 (each process holds a PostgreSQL
# connection, CONN_MAX_AGE). gthread: one process per CPU, 2 to 8, each with `threads`.
_default_workers = min(8, max(2, CPUS)) if THREADED else min(9, 2 * CPUS + 1)
workers = _int("WEB_CONCURRENCY", _default_workers)

# A request that takes longer than this is stuck: its worker is killed and replaced.
# The slowest legitimate request (a year of hourly series, a 5000-sample batch) takes
# well under a second on a small VPS.
timeout = _int("GUNICORN_TIMEOUT", 30)
# On SIGTERM (compose stop, systemctl stop, an upgrade) requests in flight may finish.
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 20)
# gthread only (sync closes each connection after its response): longer than Caddy keeps
# an idle upstream connection (60 s in the Caddyfile), so the proxy, not gunicorn,
# closes idle connections and never sends a request on one gunicorn is closing.
keepalive = _int("GUNICORN_KEEPALIVE", 75)

# Recycle workers now and then so a slow leak cannot grow forever; the jitter keeps
# the workers from restarting at the same moment. Rarely: a new worker imports Django
# again and starts with an empty token cache (telemetry.token_cache), so until it has
# seen every household its requests are slower. With many households a limit counted
# in thousands replaced every worker every minute or so, nearly together, and those
# were a round's slowest seconds, while a worker that was never replaced kept the size
# it had with every token cached (docs/PERFORMANCE.md, worker recycling). A busy
# worker now lasts hours, a quiet one weeks.
max_requests = _int("GUNICORN_MAX_REQUESTS", 500_000, minimum=0)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 50_000, minimum=0)

# Trust X-Forwarded-Proto / -For only from the proxy. Under systemd Caddy is on
# loopback (the default below); in the compose stack it has an address on the private
# network that changes, and the app's port is not published, so the stack sets "*".
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Logs go to stdout/stderr: the container runtime or journald keeps them.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").strip().lower() or "info"
# Client address as Caddy saw it, request line, status, bytes, duration in ms, agent.
# Tokens travel in the Authorization header, which is never logged.
access_log_format = '%({x-forwarded-for}i)s %(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms "%(f)s" "%(a)s"'

# The collector's full collections between requests, not inside them (p1common.
# collector; docs/PERFORMANCE.md, "Tenth session"): one after this many collections of
# its middle generation (unset: the collector's FULL_AFTER). 0: CPython's collector as
# it comes, collecting in whatever request is running.
_GC_FULL_AFTER: int | None = (
    _int("GUNICORN_GC_FULL_AFTER", 0, minimum=0)
    if os.environ.get("GUNICORN_GC_FULL_AFTER", "").strip()
    else None
)

# The heartbeat file in RAM: on a container's overlay filesystem or an SD card a write
# can stall long enough for the arbiter to kill a healthy worker.
_SHM = "/dev/shm"  # noqa: S108 - a RAM file system for gunicorn's own heartbeat files
if os.path.isdir(_SHM):
    worker_tmp_dir = _SHM

# gunicorn's control socket would be created under $HOME, which is read-only in the
# image and under the systemd unit; nothing here uses it.
control_socket_disable = True


# prometheus_client's multiprocess files: <type>_<pid>.db, a gauge's type with its mode.
_METRICS_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_[0-9]+\.db")
# The metrics directory this arbiter made (removed again at exit), or None.
_made_metrics_dir: str | None = None


def prepare_metrics_dir(base: str | None = None) -> str:
    """The directory of /metrics' per-worker files, ready and empty of old counters (a
    dead server's files would count again): PROMETHEUS_MULTIPROC_DIR when set, made if
    missing, and then only prometheus_client's own files are removed from it, since the
    operator chose it and may keep anything else there; else a directory of our own in
    RAM (``base``: /dev/shm where there is one), removed again at exit."""
    global _made_metrics_dir
    chosen = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()
    if chosen:
        os.makedirs(chosen, mode=0o700, exist_ok=True)
        for name in os.listdir(chosen):
            path = os.path.join(chosen, name)
            if _METRICS_FILE.fullmatch(name) and os.path.isfile(path):
                os.remove(path)
        return chosen
    base = base or (_SHM if os.path.isdir(_SHM) else tempfile.gettempdir())
    directory = tempfile.mkdtemp(prefix="p1-metrics-", dir=base)  # 0700, new
    _made_metrics_dir = directory
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory


# At start, in the arbiter, before any worker boots: a database that cannot be reached
# stops gunicorn with one line naming DATABASE_URL (each worker would print a
# traceback). Then /metrics (integrations.metrics), which sums the counters of every
# worker from files in PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess
# mode): in RAM, one directory per server (prepare_metrics_dir), and a worker's live
# gauges dropped when it exits. Set here, not when this file is read: reading it must
# change nothing.
def on_starting(server: object) -> None:
    from p1platform.startup import check_database

    problem = check_database()
    if problem is not None:
        raise SystemExit(f"database error: {problem}")
    prepare_metrics_dir()


def on_exit(server: object) -> None:
    if _made_metrics_dir is not None:
        shutil.rmtree(_made_metrics_dir, ignore_errors=True)


def child_exit(server: object, worker: object) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]  # gunicorn's Worker


def post_worker_init(worker: object) -> None:
    if _GC_FULL_AFTER != 0:
        from p1common.collector import settle_after_load

        settle_after_load()


def post_request(worker: object, req: object, environ: object, resp: object) -> None:
    # Called once the response is written, before the worker takes the next request.
    if _GC_FULL_AFTER != 0:
        from p1common.collector import FULL_AFTER, collect_if_due

        collect_if_due(FULL_AFTER if _GC_FULL_AFTER is None else _GC_FULL_AFTER)
