"""The processes of a chaos run, each on a fixed loopback port so it can be stopped and
started again where its clients expect it: gunicorn, Caddy, simulate_p1 and run_edge
(PostgreSQL and Redis come from tests/services.py). Every child runs in a session of
its own (a Ctrl-C reaches only the run, which then stops them in order) and logs to a
file.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import certifi
import httpx

from p1common.child_processes import stop_process, stop_with_parent
from scripts.chaos.accounting import utc_iso

ROOT = Path(__file__).resolve().parents[2]
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


class Child:
    """One process whose output goes, line by line with the time, to a log file.

    ``watch``: a substring whose first appearance sets ``seen`` (e.g. a ready line).
    """

    def __init__(self, command: list[str], env: dict[str, str], log: Path, watch: str = "") -> None:
        self.seen = threading.Event()
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=stop_with_parent(),
        )
        self._copier = threading.Thread(
            target=self._copy, args=(self.process.stdout, log, watch), daemon=True
        )
        self._copier.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _copy(self, stream: IO[bytes], log: Path, watch: str) -> None:
        with log.open("a", encoding="utf-8") as out:
            out.write(f"---- pid {self.process.pid} started {utc_iso(datetime.now(UTC))}\n")
            for raw in stream:
                line = raw.decode(errors="replace")
                out.write(f"{time.time():.3f} {line}")
                out.flush()
                if watch and watch in line:
                    self.seen.set()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, signum: int = signal.SIGTERM) -> int:
        stop_process(self.process, STOP_TIMEOUT_S, signum)
        self._copier.join(STOP_TIMEOUT_S)
        return self.process.returncode


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
        command = [
            sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
            "p1platform.wsgi:application",
        ]  # fmt: skip
        self.child = Child(command, self.env, self.log)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()  # SIGTERM: requests in flight finish, as on `systemctl stop`


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
        self.child = Child(command, self.env, self.log)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()

    def wait_ready(self, path: str = "/readyz") -> None:
        """Until ``path`` answers 200 over TLS verified against Caddy's root alone."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "caddy's root CA not written yet"
        while time.monotonic() < deadline:
            if self.child is not None and not self.child.alive():
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


class Simulator:
    """simulate_p1 serving API v2 over TLS (the meter hop, verified) with --log."""

    def __init__(self, root: Path, env: dict[str, str], log: Path) -> None:
        self.served_log = root / "served.log"
        command = [
            sys.executable, "manage.py", "simulate_p1", "--port", "0", "--api", "both",
            "--log", str(self.served_log), "--cert-dir", str(root / "simulator-certs"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=stop_with_parent(),
        )
        banner = self.process.stdout.readline()
        if "simulated P1 meter" not in banner:
            self.process.kill()
            raise ChaosError(f"simulate_p1 did not start: {banner}{self.process.stdout.read()}")
        self.address = banner.split(" on ", 1)[1].split()[0]
        self.settings: dict[str, str] = {}
        while "HW_P1_SERIAL" not in self.settings:
            key, _, value = self.process.stdout.readline().strip().partition("=")
            if not key:
                raise ChaosError("simulate_p1 ended before printing its settings")
            self.settings[key] = value
        self._copier = threading.Thread(target=self._copy, args=(log,), daemon=True)
        self._copier.start()

    def _copy(self, log: Path) -> None:
        with log.open("a", encoding="utf-8") as out:
            for line in self.process.stdout:
                out.write(f"{time.time():.3f} {line}")
                out.flush()

    def meter_env(self) -> dict[str, str]:
        return self.settings | {"HW_P1_API": "v2"}

    def go_offline(self, seconds: float) -> None:
        """The meter drops off the network (its own switch) and comes back after ``seconds``."""
        url = f"http://{self.address}/_sim/offline"
        httpx.post(url, json={"seconds": seconds}, timeout=HTTP_TIMEOUT_S).raise_for_status()

    def stop(self) -> None:
        """SIGTERM: the simulator finishes logging answers in flight, then exits."""
        stop_process(self.process, STOP_TIMEOUT_S)
        self._copier.join(STOP_TIMEOUT_S)


class Edge:
    """run_edge, restarted after every kill; one log for all its lives."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.child: Child | None = None
        self.starts = 0

    def start(self) -> None:
        command = [sys.executable, "manage.py", "run_edge"]
        self.child = Child(command, self.env, self.log, watch="run_edge started")
        self.starts += 1

    def kill(self, started_within_s: float = READY_TIMEOUT_S) -> float:
        """SIGKILL once the edge is up; the wall-clock time just before the signal."""
        assert self.child is not None
        if not self.child.seen.wait(started_within_s):
            raise ChaosError(f"run_edge did not start in {started_within_s:g} s; see {self.log}")
        self.check_alive()
        killed_at = time.time()
        self.child.process.send_signal(signal.SIGKILL)
        self.child.process.wait(STOP_TIMEOUT_S)
        return killed_at

    def log_count(self, text: str) -> int:
        """Lines of the log (every life so far) that contain ``text``."""
        with self.log.open(encoding="utf-8", errors="replace") as log:
            return sum(text in line for line in log)

    def check_alive(self) -> None:
        if self.child is not None and not self.child.alive():
            code = self.child.process.returncode
            raise ChaosError(f"run_edge exited by itself (code {code}); see {self.log}")

    def stop(self) -> int:
        return self.child.stop() if self.child is not None else 0

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
