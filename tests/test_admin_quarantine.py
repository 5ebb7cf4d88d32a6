"""The server's record of rejected samples (the admin's quarantine view of a device)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from telemetry import quarantine
from telemetry.models import Device, IngestRejection, Sample
from tests.conftest import bearer
from tests.samples import BASE_TS, sample, series

pytestmark = pytest.mark.django_db(transaction=True)


def post(http, server, token, body):
    return http.post(f"{server.url}/v1/ingest", json=body, headers=bearer(token))


def test_rejected_batch_is_recorded_per_sample_and_nothing_is_stored(
    http, server, device, ingest_token
):
    batch = series(3)
    batch[1]["power_w"] = "lots"
    batch[2]["tariff"] = 9
    del batch[2]["ts"]
    response = post(http, server, ingest_token, {"samples": batch})
    assert response.status_code == 422
    assert Sample.objects.count() == 0
    rows = {r.index: r for r in IngestRejection.objects.filter(device=device)}
    assert set(rows) == {1, 2}
    assert rows[1].reason == "power_w must be a number"
    assert json.loads(rows[1].sample) == batch[1]
    assert rows[2].reason == "tariff must be an integer from 1 to 4; ts is required"


def test_batch_level_rejection_is_recorded_without_a_sample(http, server, device, ingest_token):
    response = post(http, server, ingest_token, {"samples": [], "extra": 1})
    assert response.status_code == 422
    (row,) = IngestRejection.objects.filter(device=device)
    assert row.index is None
    assert row.reason == "extra is not a known field"
    assert row.sample == ""


def test_accepted_batch_records_nothing(http, server, device, ingest_token):
    assert post(http, server, ingest_token, {"samples": series(2)}).status_code == 200
    assert not IngestRejection.objects.exists()


@pytest.mark.parametrize("scenario", ["no token", "bad token", "read-only token"])
def test_unauthenticated_or_unauthorised_requests_record_nothing(
    http, server, device, read_token, scenario
):
    headers = {
        "no token": {},
        "bad token": bearer("x" * 43),
        "read-only token": bearer(read_token),
    }[scenario]
    response = http.post(
        f"{server.url}/v1/ingest", json={"samples": [{"ts": "never"}]}, headers=headers
    )
    assert response.status_code in (401, 403)
    assert not IngestRejection.objects.exists()


def errors_for(indexes) -> list[dict]:
    return [{"index": i, "field": "power_w", "detail": "must be a number"} for i in indexes]


def test_record_keeps_only_the_latest_per_device(device, other_device):
    keep = quarantine.KEEP_PER_DEVICE
    samples = [sample(BASE_TS)] * (keep + 50)
    quarantine.record(other_device, samples, errors_for(range(5)), BASE_TS)
    quarantine.record(device, samples, errors_for(range(keep)), BASE_TS)
    quarantine.record(device, samples, errors_for(range(50)), BASE_TS + timedelta(seconds=1))
    kept = IngestRejection.objects.filter(device=device)
    assert kept.count() == keep
    newest = kept.filter(received_at=BASE_TS + timedelta(seconds=1)).count()
    assert newest == 50
    # Of the older batch, its last-written rows stay; its first 50 went.
    assert kept.filter(received_at=BASE_TS).order_by("index").first().index == 50
    assert IngestRejection.objects.filter(device=other_device).count() == 5


def test_recorded_sample_is_truncated(device):
    huge = sample(BASE_TS, power_w="x" * 10_000)
    quarantine.record(device, [huge], errors_for([0]), BASE_TS)
    (row,) = IngestRejection.objects.all()
    assert len(row.sample) == quarantine.SAMPLE_MAX_CHARS
    assert row.sample.endswith("…")


def test_a_failing_record_never_breaks_the_caller(device, caplog):
    gone = Device(pk=device.pk + 1000, device_id="gone")  # the foreign key fails
    quarantine.record(gone, [sample(BASE_TS)], errors_for([0]), BASE_TS)
    assert not IngestRejection.objects.exists()
    assert "could not record 1 rejected sample" in caplog.text
