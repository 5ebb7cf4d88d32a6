#!/usr/bin/env python3
"""Screenshots for the README: docs/screenshots/{dashboard,day,months,phone,admin}.png.

Builds a throwaway server (SQLite in a temporary DATA_DIR), fills 13 months of demo
history (demo.history), starts gunicorn and photographs the pages with headless
Chromium (Debian's chromium and chromium-driver). Run from the repository root:

    .venv/bin/python scripts/screenshots.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
USERNAME, PASSWORD = "demo", "demo-password-1"
SEED = 3
LOAD_TIMEOUT_S = 30
# Chart.js animates for 250 ms; give it time to settle before the picture.
SETTLE_S = 1.0
OUTAGE = timedelta(minutes=35)
OUTAGE_ENDS_AGO = timedelta(hours=3)


def prepare(data_dir: Path) -> None:
    os.environ.update(DATA_DIR=str(data_dir), DJANGO_SETTINGS_MODULE="p1platform.settings")
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_ENV", "P1_ROLE"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from demo.history import Registers, backfill
    from telemetry.models import Device, Sample
    from telemetry.tokens import issue_token

    call_command("migrate", verbosity=0)
    # A superuser, so the same session photographs the admin's device page too.
    user = get_user_model().objects.create_superuser(USERNAME, password=PASSWORD)
    device = Device.objects.create(
        device_id="home-p1",
        name="Home",
        owner=user,
        timezone="Europe/Brussels",
        capacity_price_eur_per_kw_year="53.2565",
    )
    now = datetime.now(UTC)
    # A meter outage earlier today, so the day view shows incomplete and empty quarters.
    gap_start, gap_end = now - OUTAGE_ENDS_AGO - OUTAGE, now - OUTAGE_ENDS_AGO
    backfill(device, end=gap_start, months=13, seed=SEED)
    last = Sample.objects.filter(device=device).latest("ts")
    backfill(device, start=gap_end, end=now, seed=SEED, before=Registers.of_sample(last))
    issue_token(device, "ingest", label="attic raspberry pi")


def browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from p1common.processes import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument("--hide-scrollbars")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def open_dashboard(driver, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/login")
    driver.find_element("id", "id_username").send_keys(USERNAME)
    driver.find_element("id", "id_password").send_keys(PASSWORD)
    driver.find_element("css selector", "form button[type=submit]").click()
    loaded = (
        "return ['day', 'history', 'months', 'month-title', 'live-title']"
        ".every(id => document.getElementById(id).closest('section').dataset.loaded)"
    )
    WebDriverWait(driver, LOAD_TIMEOUT_S).until(lambda d: d.execute_script(loaded))
    time.sleep(SETTLE_S)


def shoot(url: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    driver = browser(1280, 900)
    try:
        open_dashboard(driver, url)
        driver.save_screenshot(str(out / "dashboard.png"))
        for section, name in (("day", "day.png"), ("months", "months.png")):
            element = driver.find_element("id", section)
            driver.execute_script("arguments[0].scrollIntoView()", element)
            time.sleep(SETTLE_S)
            element.screenshot(str(out / name))
        driver.get(url + "/admin/telemetry/device/")
        driver.find_element("link text", "home-p1").click()
        driver.find_element("css selector", ".telemetry-latest-samples")
        driver.save_screenshot(str(out / "admin.png"))
    finally:
        driver.quit()
    phone = browser(390, 844)
    try:
        phone.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True},
        )
        open_dashboard(phone, url)
        phone.save_screenshot(str(out / "phone.png"))
    finally:
        phone.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="p1-screenshots-") as folder:
        prepare(Path(folder))
        from p1common.processes import run_server

        with run_server() as server:
            shoot(server.url, args.out)
    for name in ("dashboard.png", "day.png", "months.png", "phone.png", "admin.png"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
