"""The demo's three processes: the simulated meter, the server and the edge.

Each runs as its own ``manage.py``/gunicorn process, exactly as on a real installation
(the edge with P1_ROLE=edge), in a session of its own: Ctrl-C in the terminal reaches
only the demo, which then stops the children in order (edge, meter, server), so none
of them takes the keypress for a crash. Output goes to DATA_DIR/demo/logs.
"""

from __future__ import annotations

import errno
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
from django.conf import settings

from demo.bootstrap import DemoPaths
from p1common.child_processes import stop_process, stop_with_parent

ROOT = Path(settings.BASE_DIR)
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
# simulate_p1 makes its certificates (openssl) before it prints its settings.
METER_START_TIMEOUT_S = 60.0
# The first request waits in the listen backlog until a worker has imported Django.
SERVER_START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 25.0  # run_edge may wait up to 3 + 5 s for a meter answer in flight
_METER_SETTINGS = ("HW_P1_HOST", "HW_P1_TOKEN", "HW_P1_CA_FILE", "HW_P1_SERIAL")


class DemoError(Exception):
    """Something the demo cannot run with; the message is one line for the user."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    log_path: Path

    def running(self) -> bool:
        return self.process.poll() is None


def listen(port: int) -> socket.socket:
    """The server's socket, bound before anything else starts: a port in use stops the
    demo at once, and gunicorn inherits a socket that already accepts connections."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise DemoError(
                f"port {port} on 127.0.0.1 is already in use: stop what runs there, "
                "or choose another with DEMO_PORT=8001 (or --port)"
            ) from exc
        raise DemoError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from exc
    sock.listen(256)
    return sock


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "manage.py"), *args]


def _edge_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(P1_ROLE="edge", PYTHONUNBUFFERED="1", **extra)
    return env


def _spawn(name: str, command: list[str], log_path: Path, env: dict[str, str], **kw) -> Child:
    log = log_path.open("a")
    try:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=kw.pop("stdout", log),
            stderr=log,
            start_new_session=True,
            preexec_fn=stop_with_parent(),
            text=True,
            **kw,
        )
    finally:
        log.close()  # the child holds its own descriptor
    return Child(name, process, log_path)


def start_meter(paths: DemoPaths, seed: int) -> tuple[Child, dict[str, str]]:
    """simulate_p1 serving API v2 on a free port; returns it with the HW_P1_* settings
    it printed (its address, token, CA file and serial: TLS verified against its CA)."""
    log_path = paths.log("meter")
    command = _manage(
        "simulate_p1", "--port", "0", "--api", "v2", "--seed", str(seed),
        "--log", str(paths.meter_log), "--cert-dir", str(paths.cert_dir),
    )  # fmt: skip
    child = _spawn("meter (simulate_p1)", command, log_path, _edge_env(), stdout=subprocess.PIPE)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(
        target=_copy_lines, args=(child.process.stdout, log_path, lines), daemon=True
    ).start()
    found: dict[str, str] = {}
    while len(found) < len(_METER_SETTINGS):
        try:
            line = lines.get(timeout=METER_START_TIMEOUT_S)
        except queue.Empty:
            line = None
        if line is None:
            stop([child])
            raise DemoError(f"the simulated meter did not start; see {log_path}")
        key, sep, value = line.strip().partition("=")
        if sep and key in _METER_SETTINGS:
            found[key] = value
    return child, found


def _copy_lines(stream: IO[str], log_path: Path, lines: queue.Queue[str | None]) -> None:
    with log_path.open("a") as log:
        for line in stream:
            log.write(line)
            log.flush()
            lines.put(line)
    lines.put(None)


def start_server(sock: socket.socket, paths: DemoPaths, workers: int) -> Child:
    """gunicorn with the deployment's configuration, on the socket the demo bound."""
    command = [
        sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF),
        "p1platform.wsgi:application", "--bind", f"fd://{sock.fileno()}",
        "--workers", str(workers),
    ]  # fmt: skip
    # No access log: the edge's upload every second would fill it; errors still go there.
    env = dict(os.environ, PYTHONUNBUFFERED="1", GUNICORN_ACCESS_LOG="")
    return _spawn("server (gunicorn)", command, paths.log("server"), env, pass_fds=[sock.fileno()])


def wait_until_serving(base_url: str) -> None:
    """One health request: it waits in the backlog until a worker is up."""
    try:
        response = httpx.get(f"{base_url}/healthz", timeout=SERVER_START_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise DemoError(f"the server did not answer at {base_url}: {exc}") from exc
    if response.status_code != 200:
        raise DemoError(f"the server answered /healthz with HTTP {response.status_code}")


def start_edge(
    paths: DemoPaths, meter: dict[str, str], base_url: str, token: str, poll_interval_s: float
) -> Child:
    """run_edge polling the meter over verified TLS and uploading to the local server
    (plain HTTP, allowed for loopback only)."""
    env = _edge_env(
        **meter,
        HW_P1_API="v2",
        VPS_INGEST_URL=f"{base_url}/v1/ingest",
        VPS_DEVICE_TOKEN=token,
        EDGE_SPOOL_PATH=str(paths.spool),
        POLL_INTERVAL_S=str(poll_interval_s),
        UPLOAD_INTERVAL_S=str(poll_interval_s),
        # The server is next to it: after a hiccup (a slow first start on a busy machine)
        # the dashboard should catch up in seconds, not after up to the default 60 s backoff.
        BACKOFF_MAX_S="5",
    )
    return _spawn("edge (run_edge)", _manage("run_edge"), paths.log("edge"), env)


def first_exited(children: Iterable[Child]) -> Child | None:
    return next((child for child in children if not child.running()), None)


def stop(children: Iterable[Child]) -> list[Child]:
    """SIGTERM each child in turn and wait for it (SIGKILL after STOP_TIMEOUT_S); returns
    those that had to be killed or exited with an error."""
    failed = []
    for child in children:
        killed = stop_process(child.process, STOP_TIMEOUT_S)
        if killed or child.process.returncode not in (0, -signal.SIGTERM):
            failed.append(child)
    return failed
