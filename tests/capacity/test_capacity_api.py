"""Hand-checked capacity cases through the API (Django test client, real database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from telemetry.pipeline import ingest_batch
from telemetry.tokens import issue_token
from telemetry.validation import validate_samples
from tests.conftest import bearer
from tests.samples import sample

pytestmark = pytest.mark.django_db(transaction=True)

BRUSSELS = ZoneInfo("Europe/Brussels")


def local(*args) -> datetime:
    return datetime(*args, tzinfo=BRUSSELS).astimezone(UTC)


def load(device, start: datetime, end: datetime, power_kw, step_s: int = 60, register=1000.0):
    """Samples every step_s with registers that advance exactly with the power."""
    samples, ts = [], start
    while ts < end:
        kw = power_kw(ts)
        samples.append(sample(ts, power_w=kw * 1000, energy_import_kwh=register))
        register += kw * step_s / 3600
        ts += timedelta(seconds=step_s)
    for i in range(0, len(samples), 5000):
        columns, errors = validate_samples(samples[i : i + 5000], now=timezone.now())
        assert not errors, errors[:2]
        ingest_batch(device, columns)
    return register


@pytest.fixture
def reader(client, device):
    token = issue_token(device, "read")[1]

    def get(path: str, **params):
        params.setdefault("device_id", device.device_id)
        response = client.get(path, params, headers=bearer(token))
        return response

    return get


def test_march_dst_day_has_92_quarters(device, reader):
    load(device, local(2026, 3, 28), local(2026, 3, 31), lambda ts: 1.0)
    body = reader("/v1/capacity/quarters", date="2026-03-29").json()
    assert len(body["quarters"]) == 92
    assert body["quarters"][8]["start"] == "2026-03-29T03:00:00+02:00"  # 02:00 never was
    assert all(q["kw"] == pytest.approx(1.0) for q in body["quarters"])
    assert not any(q["incomplete"] for q in body["quarters"])


def test_october_dst_day_has_100_quarters(device, reader):
    load(device, local(2026, 10, 24), local(2026, 10, 27), lambda ts: 2.0)
    body = reader("/v1/capacity/quarters", date="2026-10-25").json()
    starts = [q["start"] for q in body["quarters"]]
    assert len(starts) == 100
    assert "2026-10-25T02:00:00+02:00" in starts and "2026-10-25T02:00:00+01:00" in starts
    assert all(q["kw"] == pytest.approx(2.0) for q in body["quarters"])


def test_peak_in_the_last_local_quarter_of_a_month_belongs_to_that_month(device, reader):
    peak_start = local(2026, 3, 31, 23, 45)

    def power(ts):
        return 7.0 if peak_start <= ts < peak_start + timedelta(minutes=15) else 1.0

    load(device, local(2026, 3, 31, 20), local(2026, 4, 1, 4), power)
    march = reader("/v1/capacity/month/2026-03").json()
    april = reader("/v1/capacity/month/2026-04").json()
    assert march["peak"]["kw"] == pytest.approx(7.0)
    assert march["peak"]["quarter_start"] == "2026-03-31T23:45:00+02:00"
    assert april["peak"]["kw"] == pytest.approx(1.0)


def test_peak_in_the_first_quarter_of_the_first_belongs_to_the_new_month(device, reader):
    first = local(2026, 5, 1, 0, 0)

    def power(ts):
        return 9.0 if first <= ts < first + timedelta(minutes=15) else 3.0

    load(device, local(2026, 4, 30, 22), local(2026, 5, 1, 2), power)
    may = reader("/v1/capacity/month/2026-05").json()
    april = reader("/v1/capacity/month/2026-04").json()
    assert may["peak"] == {
        "kw": 9.0,
        "quarter_start": "2026-05-01T00:00:00+02:00",
        "incomplete": False,
    }
    assert april["peak"]["kw"] == pytest.approx(3.0)


def test_month_below_the_floor_is_billed_at_two_and_a_half_kw(device, reader):
    load(device, local(2026, 6, 1), local(2026, 6, 3), lambda ts: 1.2)
    body = reader("/v1/capacity/month/2026-06").json()
    assert body["peak"]["kw"] == pytest.approx(1.2)
    assert body["billed_peak_kw"] == 2.5


def test_year_with_missing_months_counts_them_at_the_floor(device, reader):
    # Data only in January (peak 6 kW) and June (peak 4 kW) of 2026.
    load(device, local(2026, 1, 10), local(2026, 1, 10, 6), lambda ts: 6.0)
    load(device, local(2026, 6, 10), local(2026, 6, 10, 6), lambda ts: 4.0, register=5000.0)
    body = reader("/v1/capacity/month/2026-06").json()
    months = body["rolling_average"]["months"]
    assert next(m["month"] for m in months) == "2025-07" and months[-1]["month"] == "2026-06"
    assert sum(m["missing"] for m in months) == 10
    expected = (6.0 + 4.0 + 10 * 2.5) / 12
    assert body["rolling_average"]["kw"] == pytest.approx(expected, abs=1e-3)


def test_incomplete_quarter_is_reported_and_flagged(device, reader):
    start = local(2026, 7, 1, 12)
    load(device, start, start + timedelta(minutes=5), lambda ts: 2.0)
    day = reader("/v1/capacity/quarters", date="2026-07-01").json()["quarters"]
    noon = next(q for q in day if q["start"] == "2026-07-01T12:00:00+02:00")
    assert noon["incomplete"] is True
    assert noon["coverage"] == pytest.approx(5 / 15, abs=0.01)
    assert sum(1 for q in day if q["kw"] is None) == 95  # empty quarters are not invented


def test_meter_reported_peak_is_shown_beside_the_computed_one(device, reader):
    load(device, local(2026, 2, 3), local(2026, 2, 3, 1), lambda ts: 3.0)
    body = reader("/v1/capacity/month/2026-02").json()
    assert body["meter_reported_peak"]["kw"] == pytest.approx(4.321)
    assert body["peak"]["kw"] == pytest.approx(3.0)


def test_estimated_cost_uses_the_device_price(device, reader):
    device.capacity_price_eur_per_kw_year = "50"
    device.save()
    load(device, local(2026, 2, 3), local(2026, 2, 3, 1), lambda ts: 3.0)
    cost = reader("/v1/capacity/month/2026-02").json()["estimated_cost"]
    average = (3.0 + 11 * 2.5) / 12
    assert cost["yearly_eur"] == pytest.approx(50 * average, abs=0.01)


def test_realtime_projects_the_running_quarter_against_the_month_peak(device, reader):
    now = timezone.now()
    quarter = now - (now - datetime(2000, 1, 1, tzinfo=UTC)) % timedelta(minutes=15)
    month_start = local(now.astimezone(BRUSSELS).year, now.astimezone(BRUSSELS).month, 1)
    # An earlier 4 kW quarter this month (if the month has one), then 2 kW now.
    register = 1000.0
    if quarter - timedelta(hours=2) >= month_start:
        register = load(
            device,
            quarter - timedelta(hours=2),
            quarter - timedelta(hours=1, minutes=45),
            lambda ts: 4.0,
        )
    load(
        device,
        quarter - timedelta(minutes=1),
        now - timedelta(seconds=1),
        lambda ts: 2.0,
        step_s=1,
        register=register + 1,
    )
    body = reader("/v1/realtime").json()
    assert body["latest"]["power_w"] == 2000.0
    assert body["age_s"] < 60
    assert body["quarter"]["projected_kw"] == pytest.approx(2.0, abs=0.01)
    assert body["quarter"]["exceeds_threshold"] is False
    assert body["quarter"]["headroom_w"] > 0


def test_realtime_interpolates_the_quarter_start_from_a_reading_days_before(device, reader):
    """A meter silent for two days: the register at the quarter's start lies between its
    last reading before the silence and its first after (capacity.queries looks for the
    former within OPENING_LOOKBACK first, then without the bound)."""
    now = timezone.now().replace(microsecond=0)
    quarter = now - (now - datetime(2000, 1, 1, tzinfo=UTC)) % timedelta(minutes=15)
    before, after = quarter - timedelta(days=2), quarter + timedelta(seconds=1)
    if after >= now:
        after = now
    samples = [
        sample(before, power_w=500.0, energy_import_kwh=1000.0),
        sample(after, power_w=500.0, energy_import_kwh=1048.0),
    ]
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors
    ingest_batch(device, columns)
    body = reader("/v1/realtime").json()
    share = (after - quarter) / (after - before)
    assert body["quarter"]["energy_so_far_kwh"] == pytest.approx(48.0 * share, abs=1e-6)
    assert body["quarter"]["energy_so_far_kwh"] > 0


def test_series_days_add_up_to_the_register_change(device, reader):
    def power(ts):
        return 0.5 + ts.hour % 3

    end_register = load(device, local(2026, 3, 27), local(2026, 4, 2), power)
    body = reader("/v1/series", interval="1d", start="2026-03-27", end="2026-04-02").json()
    days = body["buckets"]
    assert [d["start"][:10] for d in days][:3] == ["2026-03-27", "2026-03-28", "2026-03-29"]
    assert days[2]["start"] == "2026-03-29T00:00:00+01:00"  # the 23-hour day
    total = sum(d["import_kwh"] for d in days)
    last_ts = local(2026, 4, 2) - timedelta(minutes=1)
    last_sample_register = end_register - power(last_ts) * 60 / 3600
    assert total == pytest.approx(last_sample_register - 1000.0, abs=1e-6)


def test_series_weeks_start_on_monday(device, reader):
    load(device, local(2026, 3, 1), local(2026, 3, 20), lambda ts: 1.0, step_s=300)
    weeks = reader("/v1/series", interval="1w", start="2026-03-02", end="2026-03-16").json()[
        "buckets"
    ]
    assert [w["start"] for w in weeks] == ["2026-03-02T00:00:00+01:00", "2026-03-09T00:00:00+01:00"]
    assert weeks[0]["import_kwh"] == pytest.approx(24 * 7, abs=0.01)


def test_series_with_too_many_points_is_400(device, reader):
    response = reader("/v1/series", interval="15m", start="2020-01-01", end="2026-01-01")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/capacity/month/2026-13", {}),
        ("/v1/capacity/month/26-01", {}),
        ("/v1/capacity/quarters", {"date": "yesterday"}),
        ("/v1/series", {"interval": "5m"}),
        ("/v1/series", {"start": "2026-01-01T00:00:00"}),
        ("/v1/series", {"start": "2026-02-01", "end": "2026-01-01"}),
    ],
)
def test_bad_query_parameters_are_400_problems(device, reader, path, params):
    response = reader(path, **params)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
