"""A real server process for tests: gunicorn on a socket the test opened first.

The test binds and listens before gunicorn starts, then hands the descriptor over
(``fd://``). Connections made before the worker is up wait in the kernel's backlog, so
no test polls or sleeps for the server to come up.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from django.conf import settings

from p1common.child_processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 15


def database_url() -> str:
    """DATABASE_URL of the test database that pytest-django created."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return "sqlite:///" + str(Path(db["NAME"]).resolve())
    auth = quote(db["USER"], safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{db['NAME']}"


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        stop_process(self.process, STOP_TIMEOUT_S)


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    return sock


@contextlib.contextmanager
def run_server(
    *,
    workers: int = 1,
    threads: int = 4,
    sock: socket.socket | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    config: Path | None = None,
    **env: str | None,
) -> Iterator[ServerProcess]:
    """Start gunicorn on the test database; ``env`` overrides (None removes a variable).

    ``sock``: a socket the caller bound earlier (it is put in listening state here), so
    a test can hand out the server's address before the server exists. ``certfile`` and
    ``keyfile``: serve HTTPS (gunicorn's own TLS) instead of plain HTTP. ``config``: a
    gunicorn configuration file (``-c``), e.g. deploy/gunicorn.conf.py; the flags given
    here still override it.
    """
    if sock is None:
        sock = listening_socket()
    else:
        sock.listen(256)
    port = sock.getsockname()[1]
    child_env = dict(os.environ)
    child_env.update(DATABASE_URL=database_url(), PYTHONUNBUFFERED="1")
    for name, value in env.items():
        if value is None:
            child_env.pop(name, None)
        else:
            child_env[name] = value
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "p1platform.wsgi:application",
        "--bind",
        f"fd://{sock.fileno()}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--graceful-timeout",
        "3",
        "--log-level",
        "warning",
    ]
    if config is not None:
        command[3:3] = ["-c", str(config)]
    scheme = "http"
    if certfile is not None:
        command += ["--certfile", str(certfile), "--keyfile", str(keyfile or certfile)]
        scheme = "https"
    process = subprocess.Popen(command, cwd=ROOT, env=child_env, pass_fds=[sock.fileno()])
    server = ServerProcess(url=f"{scheme}://127.0.0.1:{port}", process=process)
    try:
        yield server
    finally:
        server.stop()
        sock.close()
