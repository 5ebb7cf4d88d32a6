"""The realtime answer keeps its key order: what is cached first, the age last."""

from __future__ import annotations

import pytest
from django.utils import timezone

from telemetry.pipeline import ingest_batch
from telemetry.validation import validate_samples
from tests.samples import series

pytestmark = pytest.mark.django_db


def test_the_realtime_answer_lists_the_age_after_everything_it_caches(
    client, owner, device, django_capture_on_commit_callbacks
):
    client.force_login(owner)
    assert list(client.get("/v1/realtime?device_id=home-p1").json()) == [
        "device_id",
        "timezone",
        "latest",
        "age_s",
    ]
    columns, errors = validate_samples(series(3, start=timezone.now()), now=timezone.now())
    assert not errors
    with django_capture_on_commit_callbacks(execute=True):
        ingest_batch(device, columns)  # its commit drops the cached answer

    answer = client.get("/v1/realtime?device_id=home-p1").json()

    assert list(answer) == ["device_id", "timezone", "latest", "quarter", "month", "age_s"]
