"""The edge pipeline against real processes: gunicorn (tests/serverproc), simulate_p1 and
run_edge started as ``manage.py`` subprocesses, exactly as on a Raspberry Pi.

Tests wait on events (a log line, a spool depth, a process exit) with a deadline; the
helpers here poll a file or a queue briefly rather than sleep for a fixed time.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from p1common.child_processes import stop_process
from tests.serverproc import ROOT

EVENT_TIMEOUT_S = 30.0
EDGE_BASE_ENV = {
    "P1_ROLE": "edge",
    "DJANGO_SETTINGS_MODULE": "p1platform.settings",
    "PYTHONUNBUFFERED": "1",
    "LOG_LEVEL": "info",
}


class LineLog:
    """Every line a child process writes to one stream, with the time it arrived."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._changed:
                self.lines.append((time.time(), line.rstrip("\n")))
                self._changed.notify_all()

    def wait_closed(self, timeout_s: float = EVENT_TIMEOUT_S) -> list[str]:
        """Every line, once the process closed the stream (it exited)."""
        self._thread.join(timeout_s)
        with self._changed:
            return [line for _, line in self.lines]

    def text(self) -> str:
        with self._changed:
            return "\n".join(line for _, line in self.lines)

    def matching(self, pattern: str) -> list[str]:
        with self._changed:
            return [line for _, line in self.lines if re.search(pattern, line)]

    def wait_for(self, pattern: str, timeout_s: float = EVENT_TIMEOUT_S, count: int = 1) -> str:
        with self._changed:
            found = self._changed.wait_for(
                lambda: len([ln for _, ln in self.lines if re.search(pattern, ln)]) >= count,
                timeout_s,
            )
            if not found:
                got = "\n".join(line for _, line in self.lines[-30:])
                raise AssertionError(f"no line matching {pattern!r} in {timeout_s} s:\n{got}")
            return [ln for _, ln in self.lines if re.search(pattern, ln)][count - 1]


def manage(*args: str) -> list[str]:
    return [sys.executable, "manage.py", *args]


@dataclass
class SimulatorProcess:
    process: subprocess.Popen
    log_path: Path
    address: str
    settings: dict[str, str] = field(default_factory=dict)

    def meter_env(self) -> dict[str, str]:
        if "HW_P1_CA_FILE" in self.settings:
            return {**self.settings, "HW_P1_API": "v2"}
        return {"HW_P1_HOST": self.address, "HW_P1_API": "v1"}

    def control(self, path: str, body: dict[str, Any]) -> None:
        response = httpx.post(f"http://{self.address}/_sim/{path}", json=body, timeout=10)
        response.raise_for_status()

    def logged(self) -> list[str]:
        """The ts of every measurement answer served, one per answer, in order."""
        if not self.log_path.exists():
            return []
        return self.log_path.read_text().splitlines()

    def stop(self) -> None:
        stop_process(self.process, 15)


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    started: list[SimulatorProcess] = []

    def start(api: str = "v1", *extra: str, name: str = "sim") -> SimulatorProcess:
        log = tmp_path / f"{name}-served.log"
        command = manage(
            "simulate_p1", "--port", "0", "--api", api, "--log", str(log),
            "--cert-dir", str(tmp_path / f"{name}-certs"), *extra,
        )  # fmt: skip
        env = os.environ | EDGE_BASE_ENV
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        banner = process.stdout.readline()
        if "simulated P1 meter" not in banner:
            process.kill()
            pytest.fail(f"simulate_p1 did not start: {banner}{process.stderr.read()}")
        sim = SimulatorProcess(process, log, banner.split(" on ", 1)[1].split()[0])
        if api != "v1":
            while "HW_P1_SERIAL" not in sim.settings:
                name_value = process.stdout.readline().strip()
                assert name_value, "simulate_p1 ended before printing its settings"
                key, _, value = name_value.partition("=")
                sim.settings[key] = value
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@dataclass
class EdgeProcess:
    process: subprocess.Popen
    log: LineLog

    def kill(self) -> float:
        """SIGKILL; returns the wall-clock time just before the signal was sent."""
        at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        return at

    def terminate(self, signum: int = signal.SIGTERM, timeout_s: float = 20) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout_s)


@pytest.fixture
def start_edge() -> Iterator[Callable[[dict[str, str]], EdgeProcess]]:
    started: list[EdgeProcess] = []

    def start(env: dict[str, str]) -> EdgeProcess:
        full_env = {k: v for k, v in (os.environ | EDGE_BASE_ENV | env).items() if v is not None}
        process = subprocess.Popen(
            manage("run_edge"),
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        edge = EdgeProcess(process, LineLog(process.stderr))
        started.append(edge)
        return edge

    yield start
    for edge in started:
        if edge.process.poll() is None:
            edge.process.kill()
            edge.process.wait()


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    return tmp_path / "spool" / "edge-spool.sqlite3"


@pytest.fixture
def edge_env(server, ingest_token: str, spool_path: Path) -> dict[str, str]:
    """run_edge's environment for the session's server; add the meter's variables."""
    return {
        "VPS_INGEST_URL": f"{server.url}/v1/ingest",
        "VPS_DEVICE_TOKEN": ingest_token,
        "EDGE_SPOOL_PATH": str(spool_path),
        "POLL_INTERVAL_S": "0.2",
        "UPLOAD_INTERVAL_S": "0.2",
        "BATCH_SIZE": "5",
        "BACKOFF_MAX_S": "0.5",
    }


def bound_socket() -> socket.socket:
    """A port of our own that refuses connections until run_server(sock=...) listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def delivered(device) -> list[str]:
    """The ts of every sample of ``device`` in the server's database, as ISO UTC."""
    from telemetry.models import Sample

    stamps = Sample.objects.filter(device=device).values_list("ts", flat=True)
    return sorted(ts.astimezone(UTC).isoformat() for ts in stamps)


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class TLSFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


@pytest.fixture(scope="session")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A private CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    folder = tmp_path_factory.mktemp("server-tls")
    ca_key, ca = folder / "ca.key", folder / "ca.pem"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    ext = folder / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=P1 Platform test private CA"],
        ["req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ]  # fmt: skip
    for args in commands:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)
    return TLSFiles(ca, cert, key)
