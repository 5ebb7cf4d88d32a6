"""The API's edges: moments with offsets the database cannot store, far years, huge
numbers, null where the schema says a string, and a schema that states the rules the
validation applies (issue 16, points 1 and 2). Each answer is a 2xx or a clear
problem, never a 5xx; the fuzz run (tests/test_schema_fuzz.py) hunts the same class
at random, these pin the cases it found.

ISO 8601 / RFC 3339 allow offsets up to 23:59 (RFC 3339 section 5.6, time-numoffset);
PostgreSQL refuses a displacement beyond 15:59 ("time zone displacement out of
range") and fractional-second offsets, so the server works in UTC from the boundary on.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from tests.conftest import bearer

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    return response.json()


@pytest.mark.parametrize(
    "query",
    [
        # The fuzzer's find: -17:32 is valid RFC 3339 and was a 500 on PostgreSQL.
        "end=2060-02-05T03:27:41.786544-17:32",
        "start=2026-01-01T00:00:00%2B23:59&end=2026-01-03T00:00:00-23:59",
        "end=2099-12-31T23:59:59.999999-23:59",
        "start=2000-01-01T00:00:00%2B23:59&interval=1mo",
    ],
)
def test_a_moment_with_any_rfc3339_offset_is_answered(client, owner, device, query):
    client.force_login(owner)
    response = client.get(f"/v1/series?device_id=home-p1&{query}")
    assert response.status_code == 200, response.content


def test_register_breaks_take_an_offset_postgresql_cannot_store(client, owner, device):
    client.force_login(owner)
    response = client.get(
        "/v1/capacity/register-breaks?device_id=home-p1&start=2026-01-01T00:00:00-17:32"
    )
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("end=1999-12-31T23:00:00Z", "end"),
        ("end=2100-01-01T00:00:00Z", "end"),
        ("end=9999-12-31T23:59:59-23:59", "end"),
        ("end=0001-01-01T00:00:00%2B23:59", "end"),
        ("start=2026-W01-1", "start"),  # an ISO week date: fromisoformat takes it
        ("start=2026-01-01%2000:00:00Z", "start"),  # no T: not RFC 3339
        ("start=20260101T000000Z", "start"),  # basic format: not RFC 3339
        ("end=2026-01-01T00:00:00", "end"),  # no offset
    ],
)
def test_a_moment_outside_the_stated_form_is_a_400_naming_it(client, owner, device, query, field):
    client.force_login(owner)
    problem = _problem(client.get(f"/v1/series?device_id=home-p1&{query}"), 400)
    assert field in problem["errors"]


@pytest.mark.parametrize(
    "url",
    [
        "/v1/capacity/months?device_id=home-p1&count=99999999999999999999999",
        "/v1/capacity/months?device_id=home-p1&end=9999-12",
        "/v1/capacity/month/0000-01?device_id=home-p1",
        "/v1/capacity/quarters?device_id=home-p1&date=9999-12-31",
        "/v1/series?device_id=home-p1&interval=15m&start=2000-01-01&end=2099-12-31",
    ],
)
def test_far_years_and_huge_numbers_are_a_400(client, owner, device, url):
    client.force_login(owner)
    _problem(client.get(url), 400)


def test_a_series_starting_in_the_future_without_end_is_an_empty_range(client, owner, device):
    client.force_login(owner)
    start = (timezone.now() + timedelta(days=30)).date().isoformat()
    response = client.get(f"/v1/series?device_id=home-p1&start={start}")
    assert response.status_code == 200, response.content
    assert response.json()["buckets"] == []


def _ingest(client, token: str, body: dict):
    return client.post(
        "/v1/ingest", data=json.dumps(body), content_type="application/json", **_meta(token)
    )


def _meta(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": bearer(token)["Authorization"]}


def _reading(ts: str) -> dict:
    return {"ts": ts, "power_w": 400.0, "energy_import_kwh": 1234.5}


@pytest.mark.parametrize(
    ("offset", "hours"),
    [("-17:32", -(17 + 32 / 60)), ("+23:59", 23 + 59 / 60), ("+15:59", 15 + 59 / 60)],
)
def test_a_reading_with_a_far_offset_is_stored_at_its_instant(
    client, device, ingest_token, offset, hours
):
    from telemetry.models import Sample

    local = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    text = local.replace(tzinfo=None).isoformat() + offset
    instant = local - timedelta(hours=hours)

    response = _ingest(client, ingest_token, {"samples": [_reading(text)]})

    assert response.status_code == 200, response.content
    assert list(Sample.objects.filter(device=device).values_list("ts", flat=True)) == [instant]


def test_a_batch_mixing_far_and_near_offsets_keeps_every_reading(client, device, ingest_token):
    from telemetry.models import Sample

    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    near = base.isoformat()
    far = (base + timedelta(seconds=10)).astimezone(UTC).replace(tzinfo=None).isoformat()
    far = (datetime.fromisoformat(far) - timedelta(hours=17)).isoformat() + "-17:00"
    response = _ingest(client, ingest_token, {"samples": [_reading(near), _reading(far)]})
    assert response.status_code == 200, response.content
    assert Sample.objects.filter(device=device).count() == 2


@pytest.mark.parametrize(
    "ts",
    [
        "2026-01-01 00:00:00+00:00",  # a space for T
        "20260101T000000Z",  # basic format
        "2026-01-01T00:00Z",  # no seconds
        "2026-01-01t00:00:00z",  # lower case
    ],
)
def test_a_timestamp_the_schema_forbids_is_refused(client, device, ingest_token, ts):
    problem = _problem(_ingest(client, ingest_token, {"samples": [_reading(ts)]}), 422)
    assert problem["errors"][0]["field"] == "ts"


@pytest.mark.parametrize("device_id", [None, 7, ["home-p1"]])
def test_a_device_id_that_is_not_a_string_is_a_400(client, device, ingest_token, device_id):
    from telemetry.models import Sample

    ts = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    body = {"device_id": device_id, "samples": [_reading(ts)]}
    problem = _problem(_ingest(client, ingest_token, body), 400)
    assert "device_id" in problem["errors"]
    assert not Sample.objects.exists()


@pytest.mark.parametrize(
    "field", ["power_w", "energy_import_kwh", "voltage_l1_v", "average_power_15m_w"]
)
def test_a_number_beyond_the_stated_maximum_is_refused(client, device, ingest_token, field):
    ts = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    body = {"samples": [{**_reading(ts), field: 1e16}]}
    problem = _problem(_ingest(client, ingest_token, body), 422)
    assert problem["errors"][0]["field"] == field


# --- the schema states the rules -----------------------------------------------------


@pytest.fixture(scope="module")
def schema(django_db_setup, django_db_blocker) -> dict:
    from drf_spectacular.generators import SchemaGenerator

    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


def _parameter(schema: dict, path: str, name: str) -> dict:
    (parameter,) = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == name]
    return parameter


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/series", "start"),
        ("/v1/series", "end"),
        ("/v1/capacity/register-breaks", "start"),
        ("/v1/capacity/register-breaks", "end"),
        ("/v1/capacity/months", "end"),
    ],
)
def test_the_schema_says_which_parameters_may_be_sent_empty(schema, path, name):
    assert _parameter(schema, path, name).get("allowEmptyValue") is True


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/series", "interval"),
        ("/v1/capacity/months", "count"),
        ("/v1/capacity/quarters", "date"),
    ],
)
def test_a_parameter_that_refuses_empty_does_not_claim_otherwise(schema, path, name):
    assert "allowEmptyValue" not in _parameter(schema, path, name)


def test_the_sample_schema_states_the_ranges_validation_applies(schema):
    import re

    import p1wire as wire

    sample = schema["components"]["schemas"]["Sample"]["properties"]
    assert sample["power_w"]["maximum"] == wire.MAX_MAGNITUDE
    assert sample["power_w"]["minimum"] == -wire.MAX_MAGNITUDE
    assert sample["energy_import_kwh"]["minimum"] == 0
    assert sample["energy_import_kwh"]["maximum"] == wire.MAX_MAGNITUDE
    pattern = re.compile(sample["ts"]["pattern"])
    assert pattern.match("2060-02-05T03:27:41.786544-17:32")
    assert not pattern.match("1999-12-31T23:00:00Z")
    assert not pattern.match("2026-01-01 00:00:00Z")
    device_id = schema["components"]["schemas"]["IngestBatch"]["properties"]["device_id"]
    assert device_id["type"] == "string" and not device_id.get("nullable")


def test_the_device_list_links_to_every_read_of_a_device(schema):
    links = schema["paths"]["/v1/devices"]["get"]["responses"]["200"]["links"]
    reads = {
        operation["operationId"]
        for operations in schema["paths"].values()
        for method, operation in operations.items()
        if method == "get" and operation["operationId"] != "devices"
    }
    assert set(links) == reads
