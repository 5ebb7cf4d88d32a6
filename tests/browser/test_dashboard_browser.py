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


MONTH_LOADED = "return document.getElementById('month-title').closest('section').dataset.loaded"
MONTH = """
const done = arguments[arguments.length - 1];
fetch("/v1/capacity/month/" + arguments[0] + "?device_id=" + arguments[1])
  .then((r) => r.json()).then(done);
"""
Y_TICKS = "return Chart.getChart(arguments[0]).scales.y.ticks.map((t) => t.label)"


def test_a_new_devices_month_card_says_its_peak_comes_from_an_incomplete_quarter(page, household):
    logged_in(page)
    page.get(f"/?device={household.new_device_id}")
    page.wait(lambda: page.js(MONTH_LOADED), message="the month card never loaded")
    assert page.js("return document.getElementById('month-peak').textContent") == "0.01"
    note = page.driver.find_element("id", "month-peak-incomplete")
    assert note.is_displayed()
    assert "incomplete quarter" in note.text
    # The first meter: the note follows the API (its quarters are complete unless the
    # gauge test's burst, a 100 s quarter, has set the month's peak).
    page.get("/")
    month = page.wait(lambda: page.js(MONTH_LOADED), message="the month card never loaded")
    answer = page.driver.execute_async_script(MONTH, month, household.device_id)
    shown = page.driver.find_element("id", "month-peak-incomplete").is_displayed()
    assert shown is answer["peak"]["incomplete"]


def test_axes_of_tiny_values_have_distinct_readable_ticks(page, household):
    logged_in(page)
    page.get(f"/?device={household.new_device_id}")
    loaded(page, "day")
    loaded(page, "history")
    for chart in ("day-chart", "history-chart"):
        ticks = page.wait(lambda c=chart: len(t := page.js(Y_TICKS, c)) > 2 and t)
        assert len(set(ticks)) == len(ticks), f"{chart}: repeated tick labels {ticks}"
        assert all(len(label) <= 6 for label in ticks), f"{chart}: unreadable ticks {ticks}"


# Boxes that scroll sideways within the page (a table in its .table-scroll box).
SCROLLS_SIDEWAYS = """
return Array.from(document.querySelectorAll("#months *, #reconciliation *"))
  .filter((e) => e.scrollWidth > e.clientWidth + 1
    && ["auto", "scroll"].includes(getComputedStyle(e).overflowX))
  .map((e) => e.tagName + (e.id ? "#" + e.id : "") + "." + e.className + " "
    + e.scrollWidth + ">" + e.clientWidth);
"""


def test_the_13_month_table_does_not_scroll_sideways_on_a_phone(page):
    page.driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        logged_in(page)
        assert loaded(page, "months") == "13"
        assert page.js(SCROLLS_SIDEWAYS) == []
        # Every figure is still there, each beside the name of its column.
        first = page.js(
            "return Array.from(document.querySelector('#month-table tbody tr').cells)"
            ".map((c) => [c.dataset.label, c.textContent, c.offsetWidth > 0])"
        )
        headings = page.js(
            "return Array.from(document.querySelectorAll('#month-table thead th'))"
            ".map((th) => th.textContent)"
        )
        assert [label for label, _text, _shown in first] == headings
        assert all(shown for _label, _text, shown in first)
    finally:
        page.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


TIE_DEVICE_PK = 916_000
MONTH_NAMES = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()  # periods.js
# The cells of the month table's row for a month ("Oct 2026"): text and title each.
ROW_OF_MONTH = """
const row = Array.from(document.querySelectorAll("#month-table tbody tr"))
  .find((r) => r.cells[0].textContent === arguments[0]);
return row && Array.from(row.cells).map((c) => [c.innerText, c.title]);
"""  # a key of its own (see tests/capacity/test_answers_unchanged.py)


def equal_quarters_with_the_meter_on_the_later(device, day: date) -> None:
    """Samples every 60 s from 18:00 to 20:00 on ``day`` (local): 5 kW in 18:30-18:45
    and 19:15-19:30, 2 kW otherwise; the meter reports 5 kW for the later quarter,
    stamped with its end (as tests/capacity/test_meter_peak_match.py cites)."""
    from zoneinfo import ZoneInfo

    from django.utils import timezone

    from telemetry.pipeline import ingest_batch
    from telemetry.validation import validate_samples
    from tests.samples import sample

    def at(hour: int, minute: int) -> datetime:
        tz = ZoneInfo(device.timezone)
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz).astimezone(UTC)

    peaks, meter_end = (at(18, 30), at(19, 15)), at(19, 30)
    samples, ts, register = [], at(18, 0), 1000.0
    while ts < at(20, 0):
        kw = 5.0 if any(q <= ts < q + QUARTER for q in peaks) else 2.0
        one = sample(ts, power_w=kw * 1000, energy_import_kwh=register)
        one["monthly_power_peak_w"] = 5000.0 if ts >= meter_end else None
        one["monthly_power_peak_ts"] = meter_end.isoformat() if ts >= meter_end else None
        samples.append(one)
        register += kw * 60 / 3600
        ts += timedelta(seconds=60)
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors, errors[:2]
    ingest_batch(device, columns)


@pytest.fixture(scope="module")
def tie_device(household, django_db_blocker) -> tuple[str, date]:
    """A third meter of the household whose month two months back (a whole month in the
    past, whatever today is) has two equal peak quarters, the meter naming the later.
    Committed like the household (the server is another process) and flushed with it."""
    from django.contrib.auth import get_user_model

    from telemetry.models import Device

    today = datetime.now(UTC).date()
    day = date(today.year + (today.month - 3) // 12, (today.month - 3) % 12 + 1, 12)
    with django_db_blocker.unblock():
        device = Device.objects.create(
            pk=TIE_DEVICE_PK,
            device_id="tie-p1",
            name="Tie",
            owner=get_user_model().objects.get(username=USERNAME),
            timezone="Europe/Brussels",
        )
        equal_quarters_with_the_meter_on_the_later(device, day)
    return device.device_id, day


def test_the_month_table_shows_a_tie_between_two_equal_quarters_as_a_tie(page, tie_device):
    device_id, tie_month = tie_device
    logged_in(page)
    page.get(f"/?device={device_id}")
    assert loaded(page, "months") == "13"
    # The table ends with this month, or with the month of the meter's latest reading
    # once the live answer has come (the page then reloads it): find the row by its month.
    label = f"{MONTH_NAMES[tie_month.month - 1]} {tie_month.year}"
    row = page.wait(
        lambda: page.js(ROW_OF_MONTH, label), message=f"no row for {label} in the month table"
    )
    (_, _), (ours, _), (quarter, _), _, (meter, _), (meters_time, title), *_ = row
    assert ours == meter == "5.00 kW"
    # Our quarter by its start, the meter's by its end (the same day), and the tie.
    assert quarter.endswith(" 18:30"), quarter
    assert meters_time == quarter.removesuffix("18:30") + "19:30\ntie: equal power", meters_time
    assert "a tie" in title
    # The note is a line of its own: the 13-month table still fits a 1280 px window.
    assert page.js("const b = document.querySelector('#months .table-scroll');"
                   "return b.scrollWidth <= b.clientWidth")  # fmt: skip
