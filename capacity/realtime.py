"""The cached realtime answer: its key, how it is filled, and when it is dropped.

The cache holds the rendered answer (a JSON-ready dict): serving it costs no rendering.

One place for all three, so the reader (capacity.views), the token check that prefetches
it (telemetry.auth, via ``prefetch_cache_keys``) and the ingest step that invalidates it
cannot disagree on the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from capacity import reports
from capacity.serializers import RealtimeSerializer
from telemetry import series_cache
from telemetry.models import Device
from telemetry.pipeline import StoredBatch


def realtime_cache_key(device_id: str) -> str:
    return f"realtime:{device_id}"


def cached_realtime(device: Device, prefetched: dict[str, Any] | None = None) -> dict:
    """The device's realtime answer: from the cache (or what the token check already
    fetched with it), else computed and cached for settings.CACHE_TTL_S."""
    key = realtime_cache_key(device.device_id)
    prefetched = prefetched or {}
    answer = prefetched[key] if key in prefetched else cache.get(key)
    if answer is None:
        answer = dict(RealtimeSerializer(reports.realtime(device, timezone.now())).data)
        cache.set(key, answer, settings.CACHE_TTL_S)
    return answer


def with_age(answer: dict, now: datetime | None = None) -> dict:
    """The latest reading's age at the moment of serving, cached answer or not."""
    latest = answer.get("latest")
    if latest is None:
        return {**answer, "age_s": None}
    moment = now or timezone.now()
    age = (moment - datetime.fromisoformat(latest["ts"])).total_seconds()
    return {**answer, "age_s": round(age, 1)}


def forget_realtime(device_id: str) -> None:
    """Drop the device's cached realtime answer so the next read sees new samples."""
    cache.delete(realtime_cache_key(device_id))


def forget_after_batches(batches: Sequence[StoredBatch]) -> None:
    """Ingest step: once the batches are committed, their devices' cached answers are
    stale, and so are the cached series answers they touch: all dropped in one round
    trip (telemetry.series_cache). Before the commit a concurrent read could cache the
    old answers again."""
    series_cache.forget_after_batches(batches, also=lambda b: [realtime_cache_key(b.device_id)])
