"""meter_peak_match: whether the quarter the meter names as the month's peak is ours, a
tie with ours, or another one (issue 16 point 4).

The meter's monthly peak timestamp marks the END of its quarter: the Fluvius telegrams
in ndokter/dsmr_parser's test/example_telegrams.py (TELEGRAM_FLUVIUS_V171_ALT, used in
tests/edge/test_telegram_demand.py) stamp 1-0:1.6.0 and the closed months on the
quarter grid (231102114500, 230831181500, ...), and the simulator and the demo stamp the
quarter's end (edgeclient.household, demo.history).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from capacity import reports
from telemetry.pipeline import ingest_batch
from telemetry.tokens import issue_token
from telemetry.validation import validate_samples
from tests.conftest import bearer
from tests.samples import sample

pytestmark = pytest.mark.django_db(transaction=True)

BRUSSELS = ZoneInfo("Europe/Brussels")
MONTH = "2026-05"


def local(*args) -> datetime:
    return datetime(*args, tzinfo=BRUSSELS).astimezone(UTC)


# Two quarters of 5 kW, 18:30-18:45 and 19:15-19:30; 2 kW otherwise. Ours is the earliest.
FIRST_PEAK, SECOND_PEAK = local(2026, 5, 12, 18, 30), local(2026, 5, 12, 19, 15)
QUARTER = timedelta(minutes=15)


def power_kw(ts: datetime) -> float:
    return 5.0 if any(q <= ts < q + QUARTER for q in (FIRST_PEAK, SECOND_PEAK)) else 2.0


def load(device, meter_w: float | None, meter_end: datetime | None) -> None:
    """Samples every 60 s from 18:00 to 20:00 whose registers advance exactly with
    power_kw; from the end of the quarter the meter names on, each carries the meter's
    peak as the HomeWizard API reports it (monthly_power_peak_w and its timestamp)."""
    samples, ts, register = [], local(2026, 5, 12, 18), 1000.0
    while ts < local(2026, 5, 12, 20):
        one = sample(ts, power_w=power_kw(ts) * 1000, energy_import_kwh=register)
        reported = meter_end is not None and ts >= meter_end
        one["monthly_power_peak_w"] = meter_w if reported else None
        one["monthly_power_peak_ts"] = meter_end.isoformat() if reported else None
        samples.append(one)
        register += power_kw(ts) * 60 / 3600
        ts += timedelta(seconds=60)
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors, errors[:2]
    ingest_batch(device, columns)


def answers(client, device) -> tuple[dict, dict]:
    token = issue_token(device, "read")[1]
    params = {"device_id": device.device_id}
    month = client.get(f"/v1/capacity/month/{MONTH}", params, headers=bearer(token))
    table = client.get("/v1/capacity/months", {**params, "end": MONTH, "count": 2},
                       headers=bearer(token))  # fmt: skip
    assert month.status_code == table.status_code == 200
    return month.json(), table.json()["months"][0]


@pytest.mark.parametrize(
    ("meter_w", "meter_end", "expected"),
    [
        # The meter names the later of two equal quarters: a tie, not a disagreement.
        (5000.0, SECOND_PEAK + QUARTER, reports.TIE),
        # It names our own quarter (stamped with its end, 18:45).
        (5000.0, FIRST_PEAK + QUARTER, reports.SAME_QUARTER),
        # It names 18:45-19:00, a 2 kW quarter in our samples: a real disagreement.
        (5000.0, FIRST_PEAK + 2 * QUARTER, reports.DIFFERENT),
        # It names a quarter we have no samples for.
        (5000.0, local(2026, 5, 3, 7, 15), reports.DIFFERENT),
    ],
    ids=["tie", "same-quarter", "lower-quarter", "quarter-without-samples"],
)
def test_the_meters_peak_quarter_is_named_same_tie_or_different(
    client, device, meter_w, meter_end, expected
):
    load(device, meter_w, meter_end)
    month, row = answers(client, device)
    assert month["peak"]["kw"] == row["peak_kw"] == pytest.approx(5.0)
    ours = "2026-05-12T18:30:00+02:00"
    assert month["peak"]["quarter_start"] == row["peak_quarter_start"] == ours
    assert month["meter_reported_peak"]["ts"] == row["meter_reported_peak"]["ts"]
    assert month["meter_peak_match"] == row["meter_peak_match"] == expected


def test_without_a_meter_reported_peak_the_match_is_null(client, device):
    load(device, None, None)
    month, row = answers(client, device)
    assert month["meter_reported_peak"] is None and row["meter_reported_peak"] is None
    assert month["meter_peak_match"] is None and row["meter_peak_match"] is None


def test_a_month_without_samples_has_no_match(client, device):
    load(device, 5000.0, SECOND_PEAK + QUARTER)
    token = issue_token(device, "read")[1]
    table = client.get(
        "/v1/capacity/months",
        {"device_id": device.device_id, "end": MONTH, "count": 2},
        headers=bearer(token),
    ).json()
    assert table["months"][1]["month"] == "2026-04"
    assert table["months"][1]["meter_peak_match"] is None


@pytest.mark.parametrize(
    ("stamp", "quarter"),
    [
        ("2026-05-12T18:45:00+02:00", "2026-05-12T18:30:00+02:00"),  # on the grid: its end
        ("2026-05-12T18:45:00.000001+02:00", "2026-05-12T18:45:00+02:00"),
        ("2026-05-12T18:52:38+02:00", "2026-05-12T18:45:00+02:00"),  # off it: holding it
    ],
)
def test_a_meter_stamp_names_the_quarter_that_ends_at_it(stamp, quarter):
    found = reports.meter_quarter_start(datetime.fromisoformat(stamp))
    assert found == datetime.fromisoformat(quarter)
