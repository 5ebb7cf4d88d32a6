"""The ingest pipeline: the steps after a stored batch, named in settings, run in order."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.utils import timezone

from telemetry import pipeline
from telemetry.models import Device
from telemetry.validation import validate_samples
from tests.samples import series

pytestmark = pytest.mark.django_db

calls: list[tuple[str, pipeline.StoredBatch]] = []


def first_step(batches: Sequence[pipeline.StoredBatch]) -> None:
    calls.extend(("first", batch) for batch in batches)


def second_step(batches: Sequence[pipeline.StoredBatch]) -> None:
    calls.extend(("second", batch) for batch in batches)


RECORDING = ["tests.test_ingest_pipeline.first_step", "tests.test_ingest_pipeline.second_step"]


def _columns(count: int = 5) -> list:
    samples = series(count)
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors
    return columns


def test_the_project_runs_capacity_then_the_stored_answers_then_the_peak_guard():
    # The series blocks before the answers' caches (the realtime step drops the series
    # answers too): an answer cached after the drop must not have been assembled from
    # blocks the batch made stale.
    assert settings.INGEST_STEPS == [
        "capacity.materialize.refresh_after_batches",
        "telemetry.series_blocks.forget_after_batches",
        "capacity.realtime.forget_after_batches",
        "peakguard.evaluate.check_after_batches",
    ]


@override_settings(INGEST_STEPS=RECORDING)
def test_each_step_gets_the_stored_batch_in_the_order_settings_name_them():
    calls.clear()
    device = Device.objects.create(device_id="home-p1", timezone="Europe/Brussels")
    columns = _columns(5)

    assert pipeline.ingest_batch(device, columns) == 5

    assert [name for name, _ in calls] == ["first", "second"]
    batch = calls[0][1]
    assert calls[1][1] is batch
    assert (batch.device_pk, batch.device_id, batch.timezone) == (
        device.pk,
        "home-p1",
        "Europe/Brussels",
    )
    assert (batch.oldest, batch.newest, batch.inserted) == (
        min(columns[0]),
        max(columns[0]),
        5,
    )


@override_settings(INGEST_STEPS=RECORDING)
def test_a_batch_of_duplicates_runs_no_step():
    device = Device.objects.create(device_id="home-p1")
    columns = _columns(3)
    pipeline.ingest_batch(device, columns)
    calls.clear()

    assert pipeline.ingest_batch(device, columns) == 0

    assert calls == []


def test_a_misnamed_step_is_a_configuration_error_naming_the_setting():
    with override_settings(INGEST_STEPS=["capacity.materialize.no_such_step"]):
        with pytest.raises(ImproperlyConfigured, match="INGEST_STEPS: cannot import"):
            pipeline.steps()
    assert len(pipeline.steps()) == len(settings.INGEST_STEPS)
