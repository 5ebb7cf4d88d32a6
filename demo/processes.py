"""The demo's three processes: the simulated meter, the server and the edge.

Each runs as its own ``manage.py``/gunicorn process, exactly as on a real installation
(the edge with P1_ROLE=edge), started by the process harness (p1common.processes) in a
session of its own: Ctrl-C in the terminal reaches only the demo, which then stops the
children in order (edge, meter, server), so none of them takes the keypress for a crash.
Output goes to DATA_DIR/demo/logs.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterable

from django.conf import settings

from demo.bootstrap import DemoPaths
from p1common import processes
from p1common.processes import Child, ChildFailed, first_exited

__all__ = [
    "Child",
    "DemoError",
    "first_exited",
    "listen",
    "start_edge",
    "start_meter",
    "start_server",
    "stop",
    "wait_until_serving",
]

GUNICORN_CONF = settings.BASE_DIR / "deploy" / "gunicorn.conf.py"
# simulate_p1 makes its certificates (openssl) before it prints its settings.
METER_START_TIMEOUT_S = 60.0
# The first request waits in the listen backlog until a worker has imported Django.
SERVER_START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 25.0  # run_edge may wait up to 3 + 5 s for a meter answer in flight


class DemoError(Exception):
    """Something the demo cannot run with; the message is one line for the user."""


def listen(port: int) -> socket.socket:
    """The server's socket, bound before anything else starts: a port in use stops the
    demo at once, and gunicorn inherits a socket that already accepts connections."""
    try:
        return processes.listening_socket(port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise DemoError(
                f"port {port} on 127.0.0.1 is already in use: stop what runs there, "
                "or choose another with DEMO_PORT=8001 (or --port)"
            ) from exc
        raise DemoError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from exc


def start_meter(paths: DemoPaths, seed: int) -> tuple[Child, dict[str, str]]:
    """simulate_p1 serving API v2 on a free port; returns it with the HW_P1_* settings
    it printed (its address, token, CA file and serial: TLS verified against its CA).
    No served-answer log: that is for tests, and in a demo left running it only grew."""
    log_path = paths.log("meter")
    try:
        meter = processes.start_simulator(
            "--seed", str(seed),
            api="v2", cert_dir=paths.cert_dir, log_path=log_path,
            timeout_s=METER_START_TIMEOUT_S,
        )  # fmt: skip
    except ChildFailed as exc:
        raise DemoError(f"the simulated meter did not start; see {log_path}") from exc
    return meter.child, meter.settings.env


def start_server(sock: socket.socket, paths: DemoPaths, workers: int) -> Child:
    """gunicorn with the deployment's configuration, on the socket the demo bound."""
    # No access log: the edge's upload every second would fill it; errors still go there.
    env = processes.child_env(GUNICORN_ACCESS_LOG="")
    server = processes.start_server(
        sock, env, log_path=paths.log("server"), config=GUNICORN_CONF, workers=workers
    )
    return server.child


def wait_until_serving(base_url: str) -> None:
    """One health request: it waits in the backlog until a worker is up."""
    try:
        processes.wait_until_serving(base_url, SERVER_START_TIMEOUT_S)
    except ChildFailed as exc:
        raise DemoError(str(exc)) from exc


def start_edge(
    paths: DemoPaths, meter: dict[str, str], base_url: str, token: str, poll_interval_s: float
) -> Child:
    """run_edge polling the meter over verified TLS and uploading to the local server
    (plain HTTP, allowed for loopback only)."""
    env = {
        **meter,
        "HW_P1_API": "v2",
        "VPS_INGEST_URL": f"{base_url}/v1/ingest",
        "VPS_DEVICE_TOKEN": token,
        "EDGE_SPOOL_PATH": str(paths.spool),
        "POLL_INTERVAL_S": str(poll_interval_s),
        "UPLOAD_INTERVAL_S": str(poll_interval_s),
        # The server is next to it: after a hiccup (a slow first start on a busy machine)
        # the dashboard should catch up in seconds, not after up to the default 60 s backoff.
        "BACKOFF_MAX_S": "5",
        # The caller's LOG_LEVEL, else the edge's own default (not the harness's info).
        "LOG_LEVEL": os.environ.get("LOG_LEVEL"),
    }
    return processes.start_edge(env, log_path=paths.log("edge"), read="none")


def stop(children: Iterable[Child]) -> list[Child]:
    """SIGTERM each child in turn and wait for it (SIGKILL after STOP_TIMEOUT_S); returns
    those that had to be killed or exited with an error."""
    return processes.stop_in_order(children, STOP_TIMEOUT_S)
