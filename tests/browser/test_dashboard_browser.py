"""The dashboard in headless Chromium against a live server with a household's history.

After every test the page fixture asserts that the console has no error (a CSP
violation is one) and that no request left localhost (the chart library and every
other file come from the server itself).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from capacity.rules import QUARTER
from tests.browser.conftest import PASSWORD, USERNAME
from tests.conftest import bearer

# The household is committed once by the module's fixtures (the server is another
# process, so nothing may sit in an open transaction: SQLite would lock the server out)
# and flushed when the module ends. The tests themselves touch the database only through
# the server; available_apps limits pytest-django's flush after each test to an app with
# no tables, so the household survives from one test to the next.
pytestmark = pytest.mark.django_db(transaction=True, available_apps=["dashboard"])

CANVASES = ("gauge-chart", "day-chart", "history-chart")

# Counts the canvas pixels anything was drawn on (Chart.js leaves the rest transparent).
DRAWN_PIXELS = """
const canvas = document.getElementById(arguments[0]);
if (!canvas || !canvas.width || !canvas.height) return 0;
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let drawn = 0;
for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) drawn++;
return drawn;
"""


def logged_in(page) -> None:
    """Log in through the form unless the session already is."""
    page.get("/")
    if "/login" in page.driver.current_url:
        driver = page.driver
        driver.find_element("id", "id_username").send_keys(USERNAME)
        driver.find_element("id", "id_password").send_keys(PASSWORD)
        driver.find_element("css selector", "form button[type=submit]").click()
    page.wait(lambda: page.js("return document.getElementById('live-power') !== null"))


def loaded(page, section: str) -> str:
    return page.wait(
        lambda: page.js(f"return document.getElementById('{section}')?.dataset.loaded"),
        message=f"section {section} never loaded",
    )


def test_login_form_leads_to_the_dashboard(page):
    page.driver.delete_all_cookies()
    page.get("/")
    assert "/login" in page.driver.current_url
    logged_in(page)
    assert page.driver.current_url.rstrip("/") == page.base_url


def test_live_power_changes_while_the_edge_runs(page, edge):
    logged_in(page)
    first = page.wait(
        lambda: page.js("return document.getElementById('live-power').dataset.watts"),
        message="no live power shown",
    )
    changed = page.wait(
        lambda: (
            (w := page.js("return document.getElementById('live-power').dataset.watts")) != first
            and w
        ),
        timeout_s=30,
        message="live power never changed",
    )
    assert float(changed) != float(first)
    assert edge.process.poll() is None, edge.log.text()


def test_every_chart_canvas_is_drawn(page):
    logged_in(page)
    for section in ("day", "history", "months"):
        loaded(page, section)
    assert int(page.js("return document.getElementById('day').dataset.quarters")) in (92, 96, 100)
    assert int(page.js("return document.getElementById('history').dataset.buckets")) > 0
    for canvas in CANVASES:
        page.wait(
            lambda c=canvas: page.js(DRAWN_PIXELS, c) > 500,
            message=f"canvas {canvas} stayed blank",
        )


def test_history_navigates_between_periods(page):
    logged_in(page)
    start = loaded(page, "history")
    page.driver.find_element("css selector", "#history [data-period=month]").click()
    month = page.wait(lambda: (v := loaded(page, "history")) != start and v)
    assert month.startswith("month:") and month.endswith("-01")
    page.driver.find_element("id", "history-prev").click()
    previous = page.wait(lambda: (v := loaded(page, "history")) != month and v)
    assert previous < month
    assert int(page.js("return document.getElementById('history').dataset.buckets")) > 0
    page.wait(lambda: page.js(DRAWN_PIXELS, "history-chart") > 500)


def test_day_view_goes_back_a_day(page):
    logged_in(page)
    today = loaded(page, "day")
    page.driver.find_element("id", "day-prev").click()
    yesterday = page.wait(lambda: (v := loaded(page, "day")) != today and v)
    expected = (datetime.fromisoformat(today) - timedelta(days=1)).date().isoformat()
    assert yesterday == expected
    assert page.js("return document.getElementById('day-next').disabled") is False


def last_dst_change(today: date) -> tuple[date, int]:
    """The latest Brussels clock change before today, and its number of quarters."""
    candidates = []
    for year in (today.year - 1, today.year):
        for month, quarters in ((3, 92), (10, 100)):
            last = date(year, month, 31)
            candidates.append((last - timedelta(days=(last.weekday() + 1) % 7), quarters))
    return max(c for c in candidates if c[0] < today)


def test_day_view_of_a_clock_change_day_has_92_or_100_bars(page):
    logged_in(page)
    day, quarters = last_dst_change(datetime.now(UTC).date())
    page.get(f"/?day={day.isoformat()}")
    assert loaded(page, "day") == day.isoformat()
    assert int(page.js("return document.getElementById('day').dataset.quarters")) == quarters
    assert page.js("return Chart.getChart('day-chart').data.labels.length") == quarters
    page.wait(lambda: page.js(DRAWN_PIXELS, "day-chart") > 500)


def test_month_table_lists_13_months_with_the_meters_peak(page):
    logged_in(page)
    assert loaded(page, "months") == "13"
    rows = page.js(
        "return Array.from(document.querySelectorAll('#month-table tbody tr'))"
        ".map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    assert len(rows) == 13
    this_month = rows[0]
    assert this_month[1].endswith("kW") and this_month[4].endswith("kW")
    # The month's provenance: the figure the 12-month average counts and its source.
    assert this_month[6].endswith("(measured)") or this_month[6].endswith("(meter-reported)")


WARNING = "return document.getElementById('gauge').classList.contains('warning')"
# The realtime answer, fetched by the page with its session.
REALTIME = """
const done = arguments[arguments.length - 1];
fetch("/v1/realtime?device_id=" + arguments[0]).then((r) => r.json()).then(done);
"""


def test_quarter_gauge_turns_to_warning_when_a_peak_is_simulated(page, household):
    logged_in(page)
    # Before: the gauge agrees with the API (the simulated household may be charging a car).
    before = page.driver.execute_async_script(REALTIME, household.device_id)
    page.wait(
        lambda: page.js(WARNING) == before["quarter"]["exceeds_threshold"],
        message="gauge disagrees with the API",
    )
    latest = before["latest"]
    # A burst of heavy load in one quarter: 6 kWh more is 24 kW over a quarter, above any
    # peak the simulated household can reach. Spread over 100 s (216 kW between
    # readings), as no faster: a steeper step is a register discontinuity
    # (telemetry.segments), not consumption.
    start = max(datetime.fromisoformat(latest["ts"]), datetime.now(UTC)).replace(microsecond=0)
    step_s, steps = 25, 4
    quarter_end = start + (QUARTER - (start - datetime(2000, 1, 1, tzinfo=UTC)) % QUARTER)
    if quarter_end - start < timedelta(seconds=step_s * steps + 10):
        start = quarter_end  # the whole burst in the next quarter (ahead by under 5 minutes)
    burst = [
        {
            "ts": (start + timedelta(seconds=step_s * (i + 1))).isoformat(),
            "power_w": 22000.0,
            "energy_import_kwh": latest["energy_import_kwh"] + 1.5 * (i + 1),
            "energy_export_kwh": latest["energy_export_kwh"],
        }
        for i in range(steps)
    ]
    response = httpx.post(
        f"{household.server.url}/v1/ingest",
        json={"samples": burst},
        headers=bearer(household.ingest_token),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    page.wait(lambda: page.js(WARNING), message="the gauge never turned to warning")
    assert page.js("return document.getElementById('quarter-warning').hidden") is False
    after = page.driver.execute_async_script(REALTIME, household.device_id)
    assert after["quarter"]["exceeds_threshold"] is True


@pytest.mark.parametrize("width", [390])
def test_nothing_overflows_on_a_phone_width_screen(page, width):
    page.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        logged_in(page)
        for section in ("day", "history", "months"):
            loaded(page, section)
        overflow = page.js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        for canvas in CANVASES:
            assert page.js(f"return document.getElementById('{canvas}').clientWidth") <= width
    finally:
        page.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_history_periods_follow_the_local_calendar(page):
    logged_in(page)
    period = "return P1Periods.period(arguments[0], arguments[1])"
    # Weeks start on Monday; the clock change on Sunday 29 March stays in its week.
    assert page.js(period, "week", "2026-03-29") == {
        "kind": "week",
        "start": "2026-03-23",
        "end": "2026-03-30",
        "interval": "1d",
    }
    assert page.js(period, "month", "2026-02-14")["end"] == "2026-03-01"
    assert page.js(period, "year", "2026-12-31")["start"] == "2026-01-01"
    previous = "return P1Periods.shift(P1Periods.period('month', '2026-01-15'), -1)"
    assert page.js(previous)["start"] == "2025-12-01"
    assert page.js("return P1Periods.addDays('2026-10-25', 1)") == "2026-10-26"


def test_the_day_parameter_opens_the_history_on_that_day_too(page):
    logged_in(page)
    today = date.fromisoformat(loaded(page, "day"))
    asked = (today - timedelta(days=3)).isoformat()
    page.get(f"/?day={asked}")
    assert page.wait(lambda: (v := loaded(page, "day")) == asked and v)
    assert page.wait(lambda: (v := loaded(page, "history")) == f"day:{asked}" and v)


def test_the_quarter_card_names_its_threshold_and_when_the_average_began(page):
    logged_in(page)
    began = page.wait(
        lambda: (
            (v := page.js("return document.getElementById('quarter-began').textContent"))
            != "the quarter began"
            and v
        ),
        message="the quarter's start never shown",
    )
    assert began[-3:] in (":00", ":15", ":30", ":45"), began
    text = page.js("return document.querySelector('section.quarter').innerText")
    assert "Threshold (billed peak, at least 2.5 kW)" in text
    assert "Month's peak so far" not in text


def test_reconciliation_section_loads_and_lists_no_month_without_an_import(page):
    logged_in(page)
    assert loaded(page, "reconciliation") == "0"
    assert page.js("return document.getElementById('status').hidden") is True
