"""``manage.py demo`` end to end: the real command, its real children, a real login.

The demo always runs on the embedded default (a SQLite file under its own DATA_DIR,
local-memory cache), whatever database the rest of the suite uses.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from capacity.rules import Month
from p1common.processes import ROOT, OutputLog, start_child
from tests.waiting import process_gone, wait_until

# The demo runs on the embedded default whatever DATABASE_URL says, so the PostgreSQL
# pass would only repeat the SQLite pass's run (scripts/test.sh runs both).
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="the demo always runs on SQLite; the embedded-default pass runs these tests",
)

# The full 13 months are tested in test_demo_history; two months keep this test quick.
MONTHS = "2"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 40.0
HTTP_TIMEOUT_S = 30.0


@dataclass
class Demo:
    process: subprocess.Popen
    out: OutputLog

    def ready(self) -> str:
        """The base URL, once the demo says it is ready."""
        line = self.out.wait_for(r"^demo ready at ", READY_TIMEOUT_S)
        return line.split(" at ", 1)[1].rstrip("/")

    def value(self, label: str) -> str:
        line = self.out.matching(rf"^\s+{label}:")[0]
        return line.split(":", 1)[1].strip()

    def pids(self) -> list[int]:
        return [int(pid) for pid in re.findall(r"pid (\d+)", self.value("processes"))]

    def stop(self, signum: int = signal.SIGINT) -> int:
        self.process.send_signal(signum)
        return self.process.wait(STOP_TIMEOUT_S)


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", DJANGO_SETTINGS_MODULE="p1platform.settings"
    )
    return env


@pytest.fixture
def start_demo() -> Iterator:
    started: list[Demo] = []

    def start(data_dir: Path, *args: str) -> Demo:
        command = [sys.executable, "manage.py", "demo", "--port", "0", "--months", MONTHS,
                   "--poll-interval", "0.5", *args]  # fmt: skip
        child = start_child("demo", command, _env(data_dir))
        demo = Demo(child.process, child.log)
        started.append(demo)
        return demo

    yield start
    for demo in started:
        if demo.process.poll() is None:
            demo.stop(signal.SIGTERM)


def _login(client: httpx.Client, username: str, password: str) -> None:
    client.get("/admin/login/")
    response = client.post(
        "/admin/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": f"{client.base_url}/admin/login/"},
    )
    assert response.status_code == 302, response.text[:500]
    assert response.headers["location"] == "/admin/"


def _latest_ts(client: httpx.Client) -> tuple[datetime, float]:
    body = client.get("/v1/realtime", params={"device_id": "demo-p1"}).json()
    return datetime.fromisoformat(body["latest"]["ts"]), body["age_s"]


def _counts(data_dir: Path) -> dict[str, int]:
    with sqlite3.connect(data_dir / "p1platform.sqlite3") as db:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in ("auth_user", "telemetry_device", "telemetry_devicetoken")
        }


def test_demo_runs_the_platform_and_a_second_run_reuses_what_the_first_made(
    tmp_path: Path, start_demo
):
    data_dir = tmp_path / "data"
    first = start_demo(data_dir)
    base_url = first.ready()
    username, password = first.value("login").split(" / ")
    assert username == "admin"
    assert password == (data_dir / "demo" / "admin-password").read_text().strip()
    assert (data_dir / "demo" / "admin-password").stat().st_mode & 0o777 == 0o600
    assert (data_dir / "demo" / "ingest-token").stat().st_mode & 0o777 == 0o600
    token = (data_dir / "demo" / "ingest-token").read_text()

    with httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_S) as client:
        _login(client, username, password)
        assert client.get("/").status_code == 200
        last_month = Month.of(datetime.now(UTC), ZoneInfo("Europe/Brussels")).shift(-1)
        month = client.get(f"/v1/capacity/month/{last_month}", params={"device_id": "demo-p1"})
        assert month.status_code == 200, month.text
        assert month.json()["peak"]["kw"] > 2.5
        assert month.json()["completeness"]["ratio"] > 0.99
        # Live data from the edge: the latest sample moves on (history never does) and
        # is seconds old.
        first_ts, _ = _latest_ts(client)
        wait_until(lambda: _latest_ts(client)[0] > first_ts, what="a live sample")
        # Seconds old once the edge has caught up (on a busy machine the first uploads
        # may queue in the spool while the server starts).
        last_ts, _ = wait_until(
            lambda: (latest := _latest_ts(client))[1] < 10 and latest,
            timeout_s=90,
            what="a sample seconds old",
        )

    pids = first.pids()
    assert len(pids) == 3
    assert first.stop() == 0
    assert all(process_gone(pid) for pid in pids)
    assert "demo stopped" in first.out.text()
    counts = _counts(data_dir)
    assert counts == {"auth_user": 1, "telemetry_device": 1, "telemetry_devicetoken": 1}

    second = start_demo(data_dir)
    base_url = second.ready()
    assert second.value("login") == f"admin / {password}"
    assert re.search(r"^history: (up to date|\d{1,3} samples)", second.out.text(), re.M)
    assert (data_dir / "demo" / "ingest-token").read_text() == token
    with httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT_S) as client:
        _login(client, username, password)
        devices = client.get("/v1/devices").json()
        assert [d["device_id"] for d in devices["devices"]] == ["demo-p1"]
        wait_until(lambda: _latest_ts(client)[0] > last_ts, what="a live sample after restart")
    # manage.py in the checkout works on the running demo's database, as the README
    # says: the same DATA_DIR and no DATABASE_URL.
    issued = subprocess.run(
        [sys.executable, "manage.py", "issue_token", "demo-p1", "--scopes", "read"],
        cwd=ROOT, env=_env(data_dir), capture_output=True, text=True, timeout=STOP_TIMEOUT_S,
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    read_token = issued.stdout.splitlines()[-1]
    answer = httpx.get(
        f"{base_url}/v1/devices",
        headers={"Authorization": f"Bearer {read_token}"},
        timeout=HTTP_TIMEOUT_S,
    )
    assert [d["device_id"] for d in answer.json()["devices"]] == ["demo-p1"]
    counts["telemetry_devicetoken"] += 1
    # A child that dies is named, the others are stopped, and the demo fails.
    meter_pid, server_pid, edge_pid = second.pids()
    os.kill(edge_pid, signal.SIGKILL)
    assert second.process.wait(STOP_TIMEOUT_S) == 1
    assert "edge (run_edge) exited unexpectedly (status -9)" in second.out.text()
    assert process_gone(meter_pid) and process_gone(server_pid)
    assert _counts(data_dir) == counts
    # No log that only grows while the demo runs (the meter's served answers).
    assert not list(data_dir.rglob("meter-served.log"))

    # Another household on the same directory is refused before anything changes.
    third = subprocess.run(
        [sys.executable, "manage.py", "demo", "--port", "0", "--seed", "2"],
        cwd=ROOT, env=_env(data_dir), capture_output=True, text=True, timeout=STOP_TIMEOUT_S,
    )  # fmt: skip
    assert third.returncode != 0
    assert "holds the demo household of --seed 1" in third.stderr, third.stderr
    assert "DATA_DIR=var/seed-2 scripts/demo.sh --seed 2" in third.stderr
    assert len([x for x in third.stderr.splitlines() if x.strip()]) == 1, third.stderr
    assert _counts(data_dir) == counts


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_demo_stops_cleanly_on_sigterm_and_when_its_terminal_closes(
    tmp_path: Path, start_demo, signum
):
    demo = start_demo(tmp_path / "data", "--months", "1")
    demo.ready()
    pids = demo.pids()
    assert demo.stop(signum) == 0
    assert "demo stopped" in demo.out.text()
    assert all(process_gone(pid) for pid in pids)


def test_demo_children_stop_when_the_demo_itself_is_killed(tmp_path: Path, start_demo):
    demo = start_demo(tmp_path / "data", "--months", "1")
    demo.ready()
    pids = demo.pids()
    demo.process.kill()
    demo.process.wait()
    wait_until(
        lambda: all(process_gone(pid) for pid in pids),
        timeout_s=STOP_TIMEOUT_S,
        what=f"the demo's children {pids} to stop after its SIGKILL",
    )


def test_demo_refuses_a_port_in_use_with_one_line(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "manage.py", "demo", "--port", str(port)],
            cwd=ROOT,
            env=_env(tmp_path / "data"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"CommandError: port {port} on 127.0.0.1 is already in use: stop what runs there, "
        "or choose another with DEMO_PORT=8001 (or --port)"
    ]
    assert not (tmp_path / "data" / "demo").exists()
