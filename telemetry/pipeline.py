"""The ingest pipeline: a validated batch is stored, then every step that follows it
runs, in the order settings.INGEST_STEPS names them.

telemetry sits below capacity and peakguard, so it cannot import their work; the
project's settings name it instead, as MIDDLEWARE does for requests. The path from a
request to every table it writes is: telemetry.views -> this module's ``ingest_batch``
-> the storage plan's insert_batch (samples, rollups, register breaks) -> each step,
called with a typed ``StoredBatch``, in the same commit as the samples (on TimescaleDB,
after the aggregates were refreshed). A step that must see the commit (a cache
invalidation, a check that reads other connections) schedules itself with
``transaction.on_commit``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string
from rest_framework import exceptions

from p1common.problems import PayloadTooLarge, UnprocessableBatch
from telemetry import quarantine
from telemetry.models import Device
from telemetry.storage import plan_for, timestamps
from telemetry.validation import validate_samples


@dataclass(frozen=True)
class StoredBatch:
    """What a step learns of a batch that added rows: whose, which span, how many."""

    device_pk: int
    device_id: str
    timezone: str
    oldest: datetime
    newest: datetime
    inserted: int


Step = Callable[[StoredBatch], None]


@functools.cache
def steps() -> tuple[Step, ...]:
    """settings.INGEST_STEPS, imported once per process (again after a test overrides
    the setting)."""
    found = []
    for path in settings.INGEST_STEPS:
        try:
            found.append(import_string(path))
        except ImportError as exc:
            raise ImproperlyConfigured(f"INGEST_STEPS: cannot import {path!r} ({exc})") from exc
    return tuple(found)


@receiver(setting_changed)
def _forget_steps(setting: str, **kwargs: Any) -> None:
    if setting == "INGEST_STEPS":
        steps.cache_clear()


def ingest_batch(device: Device, columns: list[list[Any] | None]) -> int:
    """Store one validated batch (wire.SAMPLE_FIELDS order) and run the steps that
    follow it; returns how many rows were new. A batch of duplicates runs no step."""

    def follow(oldest: datetime, newest: datetime, inserted: int) -> None:
        batch = StoredBatch(device.pk, device.device_id, device.timezone, oldest, newest, inserted)
        for step in steps():
            step(batch)

    return plan_for().insert_batch(device.pk, columns, after_insert=follow)


def accept_batch(device: Device, batch: dict[str, Any], now: datetime) -> dict[str, int]:
    """The batch rules of ``POST /v1/ingest``: all or nothing, a refused batch recorded
    in quarantine and nothing else written; returns the answer's counts."""
    named = batch.get("device_id")
    if named is not None and named != device.device_id:
        raise exceptions.PermissionDenied("This token cannot write to that device.")
    unknown = set(batch) - {"samples", "device_id"}
    if unknown:
        errors = [
            {"index": None, "field": k, "detail": "is not a known field"} for k in sorted(unknown)
        ]
        quarantine.record(device, None, errors, now)
        raise UnprocessableBatch(errors)
    samples = batch.get("samples")
    if isinstance(samples, list) and len(samples) > settings.INGEST_MAX_BATCH:
        raise PayloadTooLarge(
            f"A batch holds at most {settings.INGEST_MAX_BATCH} samples; got {len(samples)}."
        )
    if samples == []:
        errors = [{"index": None, "field": "samples", "detail": "must not be empty"}]
        quarantine.record(device, None, errors, now)
        raise UnprocessableBatch(errors)
    columns, errors = validate_samples(samples, now=now)
    if errors:
        # Nothing of the batch was written; the record is kept apart from it.
        quarantine.record(device, samples, errors, now)
        raise UnprocessableBatch(errors)
    inserted = ingest_batch(device, columns)
    received = len(timestamps(columns))
    return {"received": received, "inserted": inserted, "duplicates": received - inserted}
