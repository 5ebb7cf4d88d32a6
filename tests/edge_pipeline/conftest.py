"""The edge pipeline against real processes: gunicorn, simulate_p1 and run_edge started
as ``manage.py`` subprocesses by the process harness (p1common.processes), exactly as on a
Raspberry Pi.

Tests wait on events (a log line, a spool depth, a process exit) with a deadline; the
helpers here poll a file or a queue briefly rather than sleep for a fixed time.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from p1common import processes
from p1common.processes import EDGE_BASE_ENV, Child, ChildStack, SimulatorProcess, manage

__all__ = ["EDGE_BASE_ENV", "manage"]  # edge_status runs beside the fixtures' children


@pytest.fixture
def start_simulator(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    with ChildStack() as started:

        def start(api: str = "v1", *extra: str, name: str = "sim") -> SimulatorProcess:
            sim = processes.start_simulator(
                *extra,
                api=api,
                served_log=tmp_path / f"{name}-served.log",
                cert_dir=tmp_path / f"{name}-certs",
            )
            started.add(sim.child)
            return sim

        yield start


@pytest.fixture
def start_edge() -> Iterator[Callable[[dict[str, str]], Child]]:
    with processes.ChildStack() as started:

        def start(env: dict[str, str]) -> Child:
            return started.add(processes.start_edge(env))

        yield start


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
    return processes.listening_socket(listen=False)


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
