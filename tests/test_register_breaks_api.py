"""GET /v1/capacity/register-breaks and the month report's breaks: documented in the
OpenAPI schema, answered in that shape, with the access rules of the other reads."""

from __future__ import annotations

from datetime import timedelta

import jsonschema
import pytest
from django.utils import timezone

from telemetry.pipeline import ingest_batch
from telemetry.tokens import issue_token
from telemetry.validation import validate_samples
from tests.conftest import bearer
from tests.samples import BASE_TS, meter_swap, sample

# Committed: on TimescaleDB the aggregates over old samples refresh only outside a
# transaction (telemetry.storage.timescale.TimescalePlan.refresh).
pytestmark = pytest.mark.django_db(transaction=True)


def store(device, samples) -> None:
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors
    ingest_batch(device, columns)


@pytest.fixture
def swapped(device):
    """About 10,000 kWh, a new meter at 0.5 kWh without export registers, and a third
    meter at 30,000 kWh ten minutes later."""
    third = [
        sample(BASE_TS + timedelta(minutes=15, seconds=10 * i), energy_import_kwh=30000 + i / 3600)
        for i in range(6)
    ]
    store(device, meter_swap() + third)
    return device


@pytest.fixture
def schema(client) -> dict:
    return client.get("/v1/schema", {"format": "json"}).json()


def json_schema(node, components: dict):
    """An OpenAPI 3.0 schema as plain JSON Schema: $refs inlined, nullable as a null type."""
    if isinstance(node, list):
        return [json_schema(n, components) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return json_schema(components[node["$ref"].rsplit("/", 1)[1]], components)
    out = {k: json_schema(v, components) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def answer_schema(schema: dict, path: str) -> dict:
    content = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    return json_schema(content["schema"], schema["components"]["schemas"])


def test_breaks_are_listed_oldest_first_in_the_documented_shape(client, swapped, schema):
    token = issue_token(swapped, "read")[1]
    response = client.get("/v1/capacity/register-breaks", headers=bearer(token))
    assert response.status_code == 200
    body = response.json()
    jsonschema.validate(body, answer_schema(schema, "/v1/capacity/register-breaks"))
    first, second = body["register_breaks"]
    assert first["kind"] == "went-down"
    assert first["ts"] == "2026-03-01T01:05:00+01:00"
    assert first["previous_ts"] == "2026-03-01T01:00:50+01:00"
    assert first["import_kwh"] == 0.5
    assert first["export_kwh"] is None
    assert first["export_step_kwh"] is None
    assert first["unmeasured_s"] == 250.0
    assert second["kind"] == "impossible-step"
    assert second["import_step_kwh"] == pytest.approx(30000 - (0.5 + 5 / 3600), abs=1e-6)


def test_month_report_shows_the_month_breaks_in_the_documented_shape(client, swapped, schema):
    token = issue_token(swapped, "read")[1]
    body = client.get("/v1/capacity/month/2026-03", headers=bearer(token)).json()
    jsonschema.validate(body, answer_schema(schema, "/v1/capacity/month/{month}"))
    assert [b["kind"] for b in body["register_breaks"]] == ["went-down", "impossible-step"]
    assert (
        client.get("/v1/capacity/month/2026-02", headers=bearer(token)).json()["register_breaks"]
        == []
    )
    # The 30,000 kWh jump is no energy: the quarter holds two short measured parts.
    assert body["peak"]["kw"] < 5


def test_breaks_between_start_and_end(client, swapped):
    token = issue_token(swapped, "read")[1]
    answer = client.get(
        "/v1/capacity/register-breaks",
        {"start": "2026-03-01T00:10:00+00:00", "end": "2026-03-02"},
        headers=bearer(token),
    ).json()
    assert [b["kind"] for b in answer["register_breaks"]] == ["impossible-step"]
    bad = client.get(
        "/v1/capacity/register-breaks",
        {"start": "2026-03-02", "end": "2026-03-01"},
        headers=bearer(token),
    )
    assert bad.status_code == 400
    assert "start" in bad.json()["errors"]


def test_breaks_follow_the_read_access_rules(client, swapped, other_device):
    ingest_only = issue_token(swapped, "ingest")[1]
    assert client.get("/v1/capacity/register-breaks").status_code == 401
    assert (
        client.get("/v1/capacity/register-breaks", headers=bearer(ingest_only)).status_code == 403
    )
    neighbour = issue_token(other_device, "read")[1]
    other = client.get(
        "/v1/capacity/register-breaks", {"device_id": swapped.device_id}, headers=bearer(neighbour)
    )
    assert other.status_code in (403, 404)
    assert "register_breaks" not in other.json()


def test_schema_documents_optional_export_and_the_breaks(schema):
    components = schema["components"]["schemas"]
    sample_schema = components["Sample"]
    assert "energy_export_kwh" not in sample_schema["required"]
    assert sample_schema["properties"]["energy_export_kwh"]["nullable"] is True
    bucket = components["Series"]["properties"]["buckets"]["items"]
    assert bucket["properties"]["export_kwh"]["nullable"] is True
    assert components["RegisterBreak"]["properties"]["kind"]["enum"] == [
        "went-down",
        "impossible-step",
    ]
    assert "/v1/capacity/register-breaks" in schema["paths"]
