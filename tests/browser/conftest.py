"""Headless Chromium (Debian's chromium + chromium-driver) against a live gunicorn with a
household's history, and simulate_p1 + run_edge feeding it live readings.

Everything here is package-scoped: one server, one browser, one history for every
module of tests/browser, so a pass of the browser tests stays well within its time
budget. The data is committed (the server is another process) and flushed at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from p1common import processes
from p1common.processes import (
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    Child,
    ServerProcess,
    SimulatorProcess,
    run_server,
)
from tests.tools import tool_missing

WAIT_S = 20
USERNAME, PASSWORD = "household", "household-pw-1"
# A meter whose registers (random per seed) exceed what 13 months of demo history use,
# so the history can end exactly at them (demo.history.generate's at_end).
SIM_SEED = 36


def _missing_browser() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) and os.access(path, os.X_OK)):
            return f"{path} is not installed (Debian packages chromium and chromium-driver)"
    return None


@pytest.fixture(scope="package")
def browser_tools() -> None:
    reason = _missing_browser()
    if reason:
        tool_missing(reason)


@dataclass
class Household:
    server: ServerProcess
    device_id: str
    device_pk: int
    ingest_token: str
    simulator: SimulatorProcess
    edge_env: dict[str, str]
    # The same household's second meter, installed a moment ago: 40 s of readings at
    # 225 W, so its month has one quarter, incomplete, of about 0.01 kW.
    new_device_id: str


def start_simulator(folder: Path) -> SimulatorProcess:
    return processes.start_simulator(
        "--seed", str(SIM_SEED), api="v1", served_log=folder / "served.log",
        cert_dir=folder / "certs",
    )  # fmt: skip


def meter_registers(sim: SimulatorProcess):
    """The simulated meter's four registers now (kWh), read over its v1 API."""
    from demo.history import Registers

    data = httpx.get(f"http://{sim.address}/api/v1/data", timeout=10).json()
    return Registers(
        data["total_power_import_t1_kwh"],
        data["total_power_import_t2_kwh"],
        data["total_power_export_t1_kwh"],
        data["total_power_export_t2_kwh"],
    )


NEW_DEVICE_W = 225.0
NEW_DEVICE_SPAN_S = 40


def first_readings(device, now: datetime) -> None:
    """A new meter's first 40 s, within one quarter of this local month (ending a second
    ago, or just before the running quarter when it began less than 40 s ago), stored
    through ingest as the edge's first batch would be."""
    from zoneinfo import ZoneInfo

    from capacity.rules import QUARTER
    from telemetry.pipeline import ingest_batch
    from telemetry.timegrid import bucket_start
    from telemetry.validation import validate_samples

    local = now.astimezone(ZoneInfo(device.timezone))
    month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    span = timedelta(seconds=NEW_DEVICE_SPAN_S)
    end = now.replace(microsecond=0) - timedelta(seconds=1)
    quarter = bucket_start(end, QUARTER)
    if end - quarter < span and quarter > month_start:
        end = quarter - timedelta(seconds=1)
    # In a month's first 40 s they would begin in the month before: fewer then.
    start = max(end - span, month_start.astimezone(UTC))
    steps = 8
    span_s = (end - start).total_seconds()
    kwh_per_s = NEW_DEVICE_W / 1000 / 3600
    samples = [
        {
            "ts": (start + timedelta(seconds=span_s * i / steps)).isoformat(),
            "power_w": NEW_DEVICE_W,
            "energy_import_kwh": 1.0 + kwh_per_s * span_s * i / steps,
            "energy_export_kwh": 0.0,
        }
        for i in range(steps + 1)
    ]
    columns, errors = validate_samples(samples, now=now)
    assert not errors, errors
    ingest_batch(device, columns)


@pytest.fixture(scope="package")
def household(
    browser_tools, django_db_setup, django_db_blocker, tmp_path_factory
) -> Iterator[Household]:
    """A household with 13 months of history (demo.history), its meter simulated, and
    the live server; the edge is started by the tests that need it (``edge``)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.core.management import call_command

    from demo.history import backfill
    from telemetry.models import Device, Sample
    from telemetry.tokens import issue_token

    folder = tmp_path_factory.mktemp("household")
    sim = start_simulator(folder)
    try:
        with django_db_blocker.unblock():
            # The production hasher: the live server verifies this password, and it does
            # not know the fast MD5 hasher the rest of the suite uses.
            user = get_user_model().objects.create_user(USERNAME)
            user.password = make_password(PASSWORD, hasher="pbkdf2_sha256")
            user.save(update_fields=["password"])
            device = Device.objects.create(
                device_id="home-p1",
                name="Home",
                owner=user,
                timezone="Europe/Brussels",
                capacity_price_eur_per_kw_year="53.2565",
            )
            token = issue_token(device, "ingest")[1]
            now = datetime.now(UTC)
            # History ends just before the meter's present reading, at its registers, so
            # the edge's first upload continues it without a jump (which would read as an
            # enormous quarter).
            registers = meter_registers(sim)
            backfill(device, end=now - timedelta(seconds=5), seed=SIM_SEED, at_end=registers)
            last = Sample.objects.filter(device=device).latest("ts")
            joined = (last.energy_import_kwh, last.energy_export_kwh)
            expected = (
                registers.import_t1 + registers.import_t2,
                registers.export_t1 + registers.export_t2,
            )
            assert joined == pytest.approx(expected, abs=0.01), "history does not meet the meter"
            new_device = Device.objects.create(
                device_id="new-p1", name="New meter", owner=user, timezone="Europe/Brussels"
            )
            first_readings(new_device, now)
        with run_server(INGEST_THROTTLE_RATE="off") as server:
            yield Household(
                server=server,
                device_id=device.device_id,
                device_pk=device.pk,
                ingest_token=token,
                simulator=sim,
                new_device_id=new_device.device_id,
                edge_env={
                    "VPS_INGEST_URL": f"{server.url}/v1/ingest",
                    "VPS_DEVICE_TOKEN": token,
                    "EDGE_SPOOL_PATH": str(folder / "spool.sqlite3"),
                    "POLL_INTERVAL_S": "0.5",
                    "UPLOAD_INTERVAL_S": "0.5",
                    "HW_P1_HOST": sim.address,
                    "HW_P1_API": "v1",
                },
            )
    finally:
        sim.stop()
        with django_db_blocker.unblock():
            call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def edge(household: Household) -> Iterator[Child]:
    """run_edge polling the simulated meter and uploading to the live server."""
    running = processes.start_edge(household.edge_env | {"DATABASE_URL": None})
    yield running
    running.stop()


class Browser:
    """A Chromium session with its console and network logs checked after each test."""

    def __init__(self, base_url: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument("--window-size=1280,1000")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.base_url = base_url

    def get(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def wait(self, predicate: Callable, timeout_s: float = WAIT_S, message: str = ""):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout_s, poll_frequency=0.1).until(
            lambda _driver: predicate(), message
        )

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def console_errors(self) -> list[dict]:
        return [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def requested_urls(self) -> list[str]:
        urls = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                urls.append(message["params"]["request"]["url"])
        return urls

    def quit(self) -> None:
        self.driver.quit()


def leaves_localhost(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return False
    return parts.hostname not in ("127.0.0.1", "localhost", "::1")


@pytest.fixture(scope="package")
def browser(household: Household) -> Iterator[Browser]:
    # household requires browser_tools, which skips when chromium or chromedriver is missing
    session = Browser(household.server.url)
    try:
        yield session
    finally:
        session.quit()


@pytest.fixture
def page(browser: Browser) -> Iterator[Browser]:
    """The browser; after the test, no console error and no request beyond localhost."""
    browser.console_errors()  # drop what an earlier test left
    browser.requested_urls()
    yield browser
    errors = browser.console_errors()
    assert errors == [], f"console errors: {errors}"
    outside = [url for url in browser.requested_urls() if leaves_localhost(url)]
    assert outside == [], f"requests that left localhost: {outside}"
