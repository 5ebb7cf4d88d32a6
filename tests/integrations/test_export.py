"""GET /v1/export: streaming CSV of samples, quarters and months (issue 15, point 3).

The quarters and months of an export must equal the API's own answers; the access
rules are the reads' (owner, other household, staff, tokens by scope); a range is
bounded and read in pages, never whole.
"""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from integrations import export
from telemetry.models import Device, Sample
from telemetry.tokens import issue_token
from tests.conftest import bearer
from tests.integrations.conftest import CLOCK_CHANGE_DAY, history, load

pytestmark = pytest.mark.django_db


def rows(response) -> list[dict[str, str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def number(text: str) -> float | None:
    return None if text == "" else float(text)


def flag(text: str) -> bool:
    assert text in ("true", "false")
    return text == "true"


@pytest.fixture
def household(device):
    load(device, history())
    return device


def get_export(client, device, **params):
    return client.get(f"/v1/export?{urlencode({'device_id': device.device_id, **params})}")


def test_exported_quarters_equal_the_quarters_answer_of_each_day(client, owner, household):
    client.force_login(owner)
    response = get_export(client, household, kind="quarters", start="2026-03-28", end="2026-03-31")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    exported = rows(response)
    expected = []
    for day in ("2026-03-28", CLOCK_CHANGE_DAY, "2026-03-30"):
        answer = client.get(
            f"/v1/capacity/quarters?device_id={household.device_id}&date={day}"
        ).json()
        expected += answer["quarters"]
    assert len(exported) == len(expected) == 96 + 92 + 96  # the clock change day has 92
    assert [
        {
            "start": q["start"],
            "kw": number(q["kw"]),
            "coverage": float(q["coverage"]),
            "incomplete": flag(q["incomplete"]),
            "sample_count": int(q["sample_count"]),
        }
        for q in exported
    ] == expected
    measured = [q for q in exported if q["kw"]]
    assert len(measured) == 12  # three hours of readings
    assert all(
        float(q["import_kwh"]) == pytest.approx(float(q["kw"]) / 4, abs=1e-3) for q in measured
    )
    # Local time with its offset, on both sides of the change.
    assert exported[96]["start"] == "2026-03-29T00:00:00+01:00"
    assert exported[96 + 91]["start"] == "2026-03-29T23:45:00+02:00"


def test_exported_months_equal_the_month_answers(client, owner, household):
    client.force_login(owner)
    device_id = household.device_id
    response = get_export(client, household, kind="months", start="2025-02-01", end="2026-04-01")
    exported = rows(response)
    assert [m["month"] for m in exported][:2] == ["2025-02", "2025-03"]
    assert len(exported) == 14
    table = client.get(f"/v1/capacity/months?device_id={device_id}&end=2026-03&count=14").json()
    by_month = {m["month"]: m for m in table["months"]}
    series = client.get(
        f"/v1/series?device_id={device_id}&interval=1mo&start=2025-02-01&end=2026-04-01"
    ).json()
    energy = {b["start"]: b for b in series["buckets"]}
    for row in exported:
        answer = by_month[row["month"]]
        assert number(row["peak_kw"]) == answer["peak_kw"]
        assert (row["peak_quarter_start"] or None) == answer["peak_quarter_start"]
        assert float(row["billed_peak_kw"]) == answer["billed_peak_kw"]
        assert flag(row["peak_missing"]) == (answer["peak_kw"] is None)
        meter = answer["meter_reported_peak"]
        assert number(row["meter_reported_peak_kw"]) == (meter and meter["kw"])
        assert (row["meter_reported_peak_ts"] or None) == (meter and meter["ts"])
        report = client.get(f"/v1/capacity/month/{row['month']}?device_id={device_id}").json()
        assert float(row["rolling_average_kw"]) == report["rolling_average"]["kw"]
        bucket = energy.get(row["start"], {})
        assert number(row["import_kwh"]) == bucket.get("import_kwh")
        assert number(row["export_kwh"]) == bucket.get("export_kwh")
    # The history's months differ, so the comparison above is not of equal blanks.
    assert len({row["peak_kw"] for row in exported}) == 14
    assert exported[-1]["start"] == "2026-03-01T00:00:00+01:00"


def test_exported_samples_are_every_stored_reading_in_local_time(client, owner, household):
    client.force_login(owner)
    response = get_export(
        client,
        household,
        kind="samples",
        start="2026-03-10T19:00:00+01:00",
        end="2026-03-10T20:00:00+01:00",
    )
    exported = rows(response)
    stored = list(
        Sample.objects.filter(
            device=household, ts__gte="2026-03-10T18:00Z", ts__lt="2026-03-10T19:00Z"
        ).order_by("ts")
    )
    assert len(exported) == len(stored) == 60
    first = exported[0]
    assert list(first) == list(export.SAMPLE_COLUMNS)
    assert first["ts"] == "2026-03-10T19:00:00+01:00"
    assert float(first["energy_import_kwh"]) == stored[0].energy_import_kwh
    assert float(first["energy_export_kwh"]) == stored[0].energy_export_kwh
    assert first["energy_import_t1_kwh"] == ""  # absent: an empty cell
    assert {r["register_break"] for r in exported} == {"false"}


def test_a_meter_swap_is_flagged_on_the_first_sample_of_the_new_segment(client, owner, device):
    from tests.samples import meter_swap

    load(device, meter_swap())
    client.force_login(owner)
    exported = rows(
        get_export(client, device, kind="samples", start="2026-03-01", end="2026-03-02")
    )
    assert [r["register_break"] for r in exported] == ["false"] * 6 + ["true"] + ["false"] * 5
    assert exported[6]["energy_export_kwh"] == ""  # the new meter has no export register


def test_samples_are_read_in_pages_never_whole(owner, device):
    from tests.samples import series

    load(device, series(2500, step_s=2))
    start, end = Sample.objects.order_by("ts").first().ts, Sample.objects.order_by("ts").last().ts
    with CaptureQueriesContext(connection) as queries:
        produced = export.sample_rows(device, start, end + timedelta(seconds=1), page_rows=1000)
        first = next(produced)
        assert len(queries) == 2  # the segment breaks, then one page
        rest = list(produced)
    assert 1 + len(rest) == 2500
    assert first[0] == start
    pages = [q["sql"] for q in queries.captured_queries if 'FROM "telemetry_sample"' in q["sql"]]
    assert len(pages) == 3  # 1000 + 1000 + 500 rows, each page a query of its own


def test_a_range_holding_more_samples_than_the_limit_is_a_400_naming_it(
    client, owner, device, monkeypatch
):
    from tests.samples import series

    load(device, series(30, step_s=2))
    start = Sample.objects.order_by("ts").first().ts
    span = {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
    client.force_login(owner)
    monkeypatch.setattr(export, "MAX_SAMPLE_ROWS", 30)
    exactly = get_export(client, device, kind="samples", **span)
    assert exactly.status_code == 200
    assert len(b"".join(exactly.streaming_content).decode().splitlines()) == 1 + 30

    monkeypatch.setattr(export, "MAX_SAMPLE_ROWS", 29)
    refused = get_export(client, device, kind="samples", **span)
    assert refused.status_code == 400
    assert refused["Content-Type"] == "application/problem+json"
    assert refused.json()["errors"] == {
        "start": [
            "the range holds more than 29 samples, the most one samples export holds; ask "
            "for a shorter range (a day at a time)"
        ]
    }
    # Quarters and months of the same range are small whatever the samples: not refused.
    assert get_export(client, device, kind="quarters", **span).status_code == 200


def test_the_sample_limit_is_a_day_of_one_second_readings_on_the_longest_day():
    assert export.MAX_SAMPLE_ROWS >= 25 * 3600


def test_the_response_streams(client, owner, household):
    client.force_login(owner)
    response = get_export(client, household, kind="samples", start="2026-03-10", end="2026-03-11")
    assert response.streaming
    assert not response.has_header("Content-Length")
    assert response["Content-Disposition"] == (
        'attachment; filename="home-p1-samples-2026-03-10-2026-03-11.csv"'
    )


# --- access: the rules of every read ---------------------------------------------------


def test_other_household_gets_the_same_404_as_for_a_missing_device(client, device, other_device):
    client.force_login(other_device.owner)
    hidden = get_export(client, device, kind="months")
    missing = client.get("/v1/export?device_id=no-such-device&kind=months")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()
    assert hidden["Content-Type"] == "application/problem+json"


def test_staff_exports_every_device(client, staff, device, other_device):
    client.force_login(staff)
    assert get_export(client, other_device, kind="quarters").status_code == 200


def test_read_token_exports_its_own_device_and_no_other(client, device, other_device):
    token = issue_token(device, "read")[1]
    own = client.get("/v1/export?kind=months", headers=bearer(token))
    assert own.status_code == 200
    assert rows(own)  # a year of months, all missing: still one row each
    other = client.get(
        f"/v1/export?kind=months&device_id={other_device.device_id}", headers=bearer(token)
    )
    assert other.status_code == 404


def test_ingest_only_token_cannot_export(client, device, ingest_token):
    response = client.get("/v1/export?kind=samples", headers=bearer(ingest_token))
    assert response.status_code == 403


def test_anonymous_caller_is_401(client, device):
    assert get_export(client, device, kind="samples").status_code == 401


def test_a_client_asking_for_csv_gets_csv_and_its_errors_as_problems(client, owner, device):
    client.force_login(owner)
    ok = client.get(f"/v1/export?device_id={device.device_id}&kind=months", HTTP_ACCEPT="text/csv")
    assert ok.status_code == 200
    bad = client.get(f"/v1/export?device_id={device.device_id}&kind=gas", HTTP_ACCEPT="text/csv")
    assert bad.status_code == 400
    assert bad["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({}, "kind", "This field is required."),
        ({"kind": "gas"}, "kind", "Use one of samples, quarters, months."),
        (
            {"kind": "samples", "start": "2025-01-01", "end": "2026-03-01"},
            "start",
            "A samples export spans at most 367 days.",
        ),
        (
            {"kind": "months", "start": "2026-03-01", "end": "2026-02-01"},
            "start",
            "Must be before end.",
        ),
        ({"kind": "quarters", "start": "1999-01-01"}, "start", "Use a year from 2000 to 2099."),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(client, owner, device, params, field, message):
    client.force_login(owner)
    response = get_export(client, device, **params)
    assert response.status_code == 400
    assert response.json()["errors"] == {field: [message]}


# --- the admin ---------------------------------------------------------------------------


def test_the_admin_action_opens_a_form_that_exports_through_the_api(client, admin_user, household):
    client.force_login(admin_user)
    page = client.post(
        "/admin/telemetry/device/",
        {"action": "export_csv", "_selected_action": [household.pk]},
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert 'action="/v1/export"' in html
    assert f'name="device_id" value="{household.device_id}"' in html
    exported = rows(
        get_export(client, household, kind="months", start="2026-03-01", end="2026-04-01")
    )
    assert exported[0]["month"] == "2026-03"


def test_the_admin_action_wants_exactly_one_device(client, admin_user, device, other_device):
    client.force_login(admin_user)
    page = client.post(
        "/admin/telemetry/device/",
        {"action": "export_csv", "_selected_action": [device.pk, other_device.pk]},
        follow=True,
    )
    assert "Select exactly one device to export." in page.content.decode()
    assert Device.objects.count() == 2
