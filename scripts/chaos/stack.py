"""The processes of a chaos run, each on a fixed loopback port so it can be stopped and
started again where its clients expect it: gunicorn, Caddy, simulate_p1 and run_edge
(PostgreSQL and Redis come from p1common.services). All are children of the process
harness (p1common.processes): a session of their own (a Ctrl-C reaches only the run,
which then stops them in order), each line to a log file after its time.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import sys
import time
from pathlib import Path

import certifi
import httpx

from p1common.processes import (
    EDGE_STARTED,
    ROOT,
    Child,
    ChildFailed,
    SimulatorProcess,
    server_command,
    start_child,
    start_edge,
    start_simulator,
)

STOP_TIMEOUT_S = 20.0
COMMAND_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 90.0
HTTP_TIMEOUT_S = 5.0
# Variables of the calling shell that must not leak into the children's settings.
SCRUBBED = (
    "DATABASE_URL", "REDIS_URL", "DATA_DIR", "DJANGO_ENV", "SECRET_KEY", "ALLOWED_HOSTS",
    "STATIC_ROOT", "P1_ROLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "EDGE_SPOOL_PATH", "VPS_CA_BUNDLE", "TIMESCALEDB",
)  # fmt: skip


class ChaosError(RuntimeError):
    """The run could not go on (a process did not start, or died by itself)."""


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED and not k.startswith("HW_P1_")}
    return env | {"PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "p1platform.settings"} | extra


def manage(*args: str, env: dict[str, str]) -> str:
    """Run a management command; its stdout, or ChaosError with its stderr."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    if result.returncode != 0:
        raise ChaosError(f"manage.py {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result.stdout


class Gunicorn:
    """The server as under systemd: deploy/gunicorn.conf.py, bound to 127.0.0.1:port."""

    def __init__(self, port: int, env: dict[str, str], log: Path) -> None:
        self.port = port
        self.env = env | {
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": "2",  # two cores, shared with everything else here
            "GUNICORN_GRACEFUL_TIMEOUT": "5",
        }
        self.log = log
        self.child: Child | None = None

    def start(self) -> None:
        # The address comes from GUNICORN_BIND, which the configuration reads.
        command = server_command(None, config=ROOT / "deploy" / "gunicorn.conf.py")
        self.child = start_child("gunicorn", command, self.env, log_path=self.log, stamped=True)

    def stop(self) -> None:
        if self.child is not None:
            # SIGTERM: requests in flight finish, as on `systemctl stop`.
            self.child.stop(STOP_TIMEOUT_S)


class Caddy:
    """Debian's caddy with the repository's Caddyfile, its local CA (`tls internal`) and
    everything it writes under ``root``; admin API off, trust store untouched."""

    def __init__(self, root: Path, port: int, http_port: int, upstream: int, log: Path) -> None:
        self.root = root
        self.port = port
        self.log = log
        self.url = f"https://127.0.0.1:{port}"
        self.root_ca = root / "data" / "pki" / "authorities" / "local" / "root.crt"
        root.mkdir(parents=True, exist_ok=True)
        self.config = root / "Caddyfile"
        self.config.write_text(
            "{\n"
            "\tadmin off\n"
            "\tskip_install_trust\n"
            "\tlocal_certs\n"  # every site gets its certificate from Caddy's local CA
            f"\tstorage file_system {root / 'data'}\n"
            "\tauto_https disable_redirects\n"
            f"\thttp_port {http_port}\n"
            f"\thttps_port {port}\n"
            "}\n"
            f"import {ROOT / 'Caddyfile'}\n"
        )
        self.env = base_env(
            VPS_DOMAIN=self.url,
            APP_UPSTREAM=f"127.0.0.1:{upstream}",
            STATIC_ROOT=str(root / "static"),
            HOME=str(root),
            XDG_DATA_HOME=str(root / "xdg-data"),
            XDG_CONFIG_HOME=str(root / "xdg-config"),
        )
        self.child: Child | None = None

    def start(self) -> None:
        command = ["caddy", "run", "--config", str(self.config), "--adapter", "caddyfile"]
        self.child = start_child("caddy", command, self.env, log_path=self.log, stamped=True)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(STOP_TIMEOUT_S)

    def wait_ready(self, path: str = "/readyz") -> None:
        """Until ``path`` answers 200 over TLS verified against Caddy's root alone."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "caddy's root CA not written yet"
        while time.monotonic() < deadline:
            if self.child is not None and not self.child.running():
                raise ChaosError(f"caddy exited; see {self.log}")
            if self.root_ca.exists():
                try:
                    context = ssl.create_default_context(cafile=str(self.root_ca))
                    answer = httpx.get(self.url + path, verify=context, timeout=HTTP_TIMEOUT_S)
                    if answer.status_code == 200:
                        return
                    last = f"HTTP {answer.status_code}"
                except (httpx.HTTPError, ssl.SSLError) as exc:
                    last = str(exc)
            time.sleep(0.2)
        raise ChaosError(f"{self.url}{path} not ready in {READY_TIMEOUT_S:g} s: {last}")

    def check_untrusted_without_root(self) -> None:
        """The public CAs alone must refuse Caddy's certificate: only then does the run
        show that the edge verifies, with the local root as its one addition."""
        try:
            httpx.get(
                self.url + "/healthz",
                verify=ssl.create_default_context(cafile=certifi.where()),
                timeout=HTTP_TIMEOUT_S,
            )
        except httpx.ConnectError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                return
            raise ChaosError(f"{self.url}: unexpected error without the root CA: {exc}") from exc
        raise ChaosError(f"{self.url}: trusted without Caddy's root CA; the run proves nothing")


def start_meter(root: Path, env: dict[str, str], log: Path) -> SimulatorProcess:
    """simulate_p1 serving API v2 over TLS (the meter hop, verified) with --log."""
    try:
        return start_simulator(
            api="both",
            env=env,
            served_log=root / "served.log",
            cert_dir=root / "simulator-certs",
            log_path=log,
            stamped=True,
        )
    except ChildFailed as exc:
        raise ChaosError(str(exc)) from exc


class Edge:
    """run_edge, restarted after every kill; one log for all its lives."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.child: Child | None = None
        self.starts = 0

    def start(self) -> None:
        self.child = start_edge({}, base=self.env, log_path=self.log, stamped=True, read="all")
        self.starts += 1

    def kill(self, started_within_s: float = READY_TIMEOUT_S) -> float:
        """SIGKILL once the edge is up; the wall-clock time just before the signal."""
        assert self.child is not None
        try:
            self.child.wait_for_line(EDGE_STARTED, started_within_s)
        except ChildFailed as exc:
            raise ChaosError(str(exc)) from exc
        self.check_alive()
        return self.child.kill(STOP_TIMEOUT_S)

    def log_count(self, text: str) -> int:
        """Lines of the log (every life so far) that contain ``text``."""
        with self.log.open(encoding="utf-8", errors="replace") as log:
            return sum(text in line for line in log)

    def check_alive(self) -> None:
        if self.child is not None and not self.child.running():
            code = self.child.returncode
            raise ChaosError(f"run_edge exited by itself (code {code}); see {self.log}")

    def stop(self) -> int:
        if self.child is None:
            return 0
        self.child.stop(STOP_TIMEOUT_S)
        return self.child.returncode or 0

    def status(self) -> dict:
        """edge_status --json: what an operator's health check would see."""
        result = subprocess.run(
            [sys.executable, "manage.py", "edge_status", "--json"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise ChaosError(f"edge_status answered no JSON: {result.stderr[-1000:]}") from None


def new_secret_key() -> str:
    return secrets.token_urlsafe(50)
