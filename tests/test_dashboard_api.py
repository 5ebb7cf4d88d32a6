"""GET /v1/capacity/months: the dashboard's 13-month table in one call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import p1wire as wire
from capacity import reports
from capacity.rules import Month
from capacity.serializers import MonthTableSerializer
from telemetry.pipeline import ingest_batch
from tests.samples import sample

pytestmark = pytest.mark.django_db


def ingest(device, samples: list[dict]) -> None:
    columns = []
    for name in wire.SAMPLE_FIELDS:
        values = [s.get(name) for s in samples]
        if name.endswith("_ts") or name == "ts":
            values = [None if v is None else datetime.fromisoformat(v) for v in values]
        columns.append(values if any(v is not None for v in values) else None)
    ingest_batch(device, columns)


def steady_quarter(start: datetime, kw: float, register: float) -> list[dict]:
    """Samples every minute over one quarter drawing ``kw`` steadily."""
    return [
        sample(
            start + timedelta(minutes=i),
            energy_import_kwh=register + kw * i / 60,
            monthly_power_peak_w=kw * 1000,
            monthly_power_peak_ts=(start + timedelta(minutes=15)).isoformat(),
        )
        for i in range(16)
    ]


def test_month_table_lists_each_month_newest_first_with_computed_and_meter_peaks(device):
    # 10:00 UTC on 10 March 2026 is 11:00 in Brussels.
    ingest(device, steady_quarter(datetime(2026, 3, 10, 10, tzinfo=UTC), 6.0, 5000.0))
    table = MonthTableSerializer(reports.month_table(device, Month(2026, 4), 3)).data
    assert [m["month"] for m in table["months"]] == ["2026-04", "2026-03", "2026-02"]
    april, march, _ = table["months"]
    assert april["peak_kw"] is None and april["billed_peak_kw"] == 2.5
    assert march["peak_kw"] == pytest.approx(6.0, abs=0.01)
    assert march["peak_quarter_start"] == "2026-03-10T11:00:00+01:00"
    assert march["meter_reported_peak"] == {"kw": 6.0, "ts": "2026-03-10T11:15:00+01:00"}


def test_months_endpoint_defaults_to_13_months_up_to_now(client, owner, device):
    client.force_login(owner)
    response = client.get("/v1/capacity/months?device_id=home-p1")
    assert response.status_code == 200
    months = response.json()["months"]
    assert len(months) == 13
    assert months[0]["month"] == str(Month.of(datetime.now(UTC), ZoneInfo(device.timezone)))


@pytest.mark.parametrize(
    ("query", "field"),
    [("end=2026-13", "end"), ("count=0", "count"), ("count=37", "count"), ("count=x", "count")],
)
def test_months_endpoint_rejects_bad_parameters_by_name(client, owner, device, query, field):
    client.force_login(owner)
    response = client.get(f"/v1/capacity/months?device_id=home-p1&{query}")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert field in response.content.decode()


def test_months_of_another_households_device_answer_404(client, owner, other_device):
    client.force_login(owner)
    assert client.get("/v1/capacity/months?device_id=next-door").status_code == 404


def test_months_endpoint_costs_the_same_queries_for_one_month_as_for_36(client, owner, device):
    # Each month with a computed peak and a meter-reported peak, so no month is skipped.
    for months_back in range(36):
        start = datetime(2026, 3, 10, 10, tzinfo=UTC) - timedelta(days=30 * months_back)
        ingest(device, steady_quarter(start, 3.0 + months_back / 10, 5000.0 - months_back))
    client.force_login(owner)
    counts = {}
    for count in (1, 36):
        with CaptureQueriesContext(connection) as queries:
            response = client.get(
                f"/v1/capacity/months?device_id=home-p1&end=2026-03&count={count}"
            )
        assert response.status_code == 200
        assert len(response.json()["months"]) == count
        assert all(m["meter_reported_peak"] for m in response.json()["months"])
        counts[count] = len(queries)
    assert counts[36] == counts[1], counts
