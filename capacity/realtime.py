"""The cached realtime answer: its key, how it is filled, refreshed and dropped.

The cache holds the rendered answer (a JSON-ready dict: serving it costs no rendering)
with its basis (capacity.reports.RealtimeBasis: what it read from the database besides
the latest sample). A live batch that only appends to the running quarter gets its
answer from that basis and its own newest sample, in its request (``refresh_after_
receipt``): an open dashboard then never waits for a recomputation after each batch,
which was most of what the reads cost a server with many households. A batch that goes
on into a later quarter gets one too, its basis carried across the quarters it finishes
(capacity.reports.basis_after), so a quarter's start does not send every open dashboard
to the database within one upload interval. Anything else that
changes the data drops the answer (the steps, a capacity rebuild, a batch that is not a
pure append), and the next read computes it from the database; where the worker's
steps dropped a cached answer, they compute it again themselves (``refill_dropped``),
so an open dashboard does not wait for that after the worker's cycle.

Every fill and refresh is stored only if no drop of the device came since it began
(telemetry.series_cache's per-device generation): a read that computed its answer just
before a batch committed cannot leave that stale answer behind, nor can a refresh from a
basis that the worker's steps changed meanwhile.

One place for all of it, so the reader (capacity.views), the token check that prefetches
it (telemetry.auth, via ``prefetch_cache_keys``) and the ingest steps cannot disagree on
the key or the shape.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.utils import timezone

from capacity import reports
from capacity.rules import Month
from capacity.serializers import RealtimeSerializer
from telemetry import series_cache
from telemetry.models import Device
from telemetry.pipeline import StoredBatch
from telemetry.timegrid import QUARTER

# Part of every cached entry: a release that changes the basis' shape recomputes.
_BASIS_VERSION = 3
logger = logging.getLogger(__name__)


def realtime_cache_key(device_id: str) -> str:
    return f"realtime:{device_id}"


def _guard_key(device_id: str) -> str:
    """Beside the answer: the span of samples the steps may do without touching it
    (after the quarter's first sample, before its end, none newer than its latest)."""
    return f"realtime-guard:{device_id}"


def _guard(device_id: str, basis: reports.RealtimeBasis | None) -> tuple[str, str] | None:
    if basis is None:
        return None
    end = basis.quarter_start + QUARTER
    return _guard_key(device_id), series_cache.span_guard(basis.opening_ts, end, basis.latest_ts)


def cached_realtime(device: Device, prefetched: dict[str, Any] | None = None) -> dict:
    """The device's realtime answer: from the cache (or what the token check already
    fetched with it), else computed and cached for settings.CACHE_TTL_S unless a batch
    of the device was stored meanwhile."""
    key = realtime_cache_key(device.device_id)
    prefetched = prefetched or {}
    entry = prefetched[key] if key in prefetched else cache.get(key)
    if isinstance(entry, dict) and isinstance(entry.get("answer"), dict):
        return entry["answer"]
    # Before the database: a drop after this read means the answer may miss its batch.
    seen = series_cache.generation(device.pk)
    realtime, basis = reports.realtime_with_basis(device)
    answer = _rendered(realtime)
    if seen is not None and settings.CACHE_TTL_S:
        series_cache.store_unless_dropped(
            device.pk,
            key,
            _entry(answer, basis),
            settings.CACHE_TTL_S,
            seen,
            _guard(device.device_id, basis),
        )
    return answer


def with_age(answer: dict, now: datetime | None = None) -> dict:
    """The latest reading's age at the moment of serving, cached answer or not."""
    latest = answer.get("latest")
    if latest is None:
        return {**answer, "age_s": None}
    moment = now or timezone.now()
    age = (moment - datetime.fromisoformat(latest["ts"])).total_seconds()
    return {**answer, "age_s": round(age, 1)}


def forget_realtime(device_pk: int, device_id: str) -> None:
    """Drop the device's cached realtime answer so the next read sees the data as it is
    now (and no fill that began before stores its answer)."""
    series_cache.forget_keys(device_pk, [realtime_cache_key(device_id), _guard_key(device_id)])


def forget_after_batches(batches: Sequence[StoredBatch]) -> None:
    """Ingest step: once the batches are committed, the cached series answers they touch
    are stale, and so are their devices' realtime answers unless the steps left the
    answer as it was: no register break of the device changed and its spans lie after
    the quarter's first sample, before its end and not after the answer's latest sample
    (then the capacity quarters before it, the samples around its start, the breaks and
    the latest sample are what it read; without the worker the batch's own steps come
    here with samples newer than the answer, which drops it). All
    dropped in one round trip (telemetry.series_cache), after the commit: before it a
    concurrent read could cache the old answers again. With the worker, an answer
    dropped for its guard (an open dashboard's: only a cached answer has one) is
    computed again at once, by ``refill_dropped``; without it the request that did the
    steps leaves that to the next read, as its own batch's drop does."""
    refill = refill_dropped if settings.INGEST_STEPS_WORKER else None
    series_cache.forget_after_batches(batches, also=_dropped, guarded=_guarded, refill=refill)


def refill_dropped(dropped: dict[int, series_cache.Generation]) -> None:
    """The answers the steps made stale, computed again from the database where the
    steps run (the worker, paced) and stored unless a batch dropped them meanwhile
    (``dropped``: each device's generation after the drop). Without it every open
    dashboard's next read after the worker's cycle that completes the quarter before
    computes its answer, all within one refresh interval, while the live path is busy.
    Best effort: an answer not refilled is computed by its next read, as before."""
    ttl = settings.CACHE_TTL_S
    if not ttl:
        return
    devices = Device.objects.in_bulk(list(dropped))
    for pk, generation in dropped.items():
        device = devices.get(pk)
        if device is None:
            continue  # deleted meanwhile
        try:
            realtime, basis = reports.realtime_with_basis(device)
        except DatabaseError:
            logger.warning("realtime answer of device pk %s not refilled", pk, exc_info=True)
            continue
        series_cache.store_unless_dropped(
            pk,
            realtime_cache_key(device.device_id),
            _entry(_rendered(realtime), basis),
            ttl,
            generation,
            _guard(device.device_id, basis),
        )


def _keys(batch: StoredBatch) -> tuple[str, str]:
    return realtime_cache_key(batch.device_id), _guard_key(batch.device_id)


def _dropped(batch: StoredBatch) -> Sequence[str]:
    return _keys(batch) if batch.breaks_changed else ()


def _guarded(batch: StoredBatch) -> tuple[str, str] | None:
    return None if batch.breaks_changed else _keys(batch)


def refresh_after_receipt(batches: Sequence[StoredBatch]) -> None:
    """Receipt step (a batch's own request, with the worker): drop what the batch makes
    stale, as ``forget_after_batches`` does, and where the batch goes on from the cached
    answer's latest sample with no register break (within the running quarter, or with
    a cache every process shares into a later one), store the batch's answer in its
    place at once; one round trip, two for a device whose answer was cached. Across a
    quarter's end the answer counts
    the finished quarter in the month's peak before the worker has stored it; the
    worker's cycle then drops it and computes it from the database (``refill_dropped``),
    which gives the same figures."""
    transaction.on_commit(lambda: _refresh(batches))


def _refresh(batches: Sequence[StoredBatch]) -> None:
    ttl = settings.CACHE_TTL_S
    for batch in batches:
        key = realtime_cache_key(batch.device_id)
        taken, generation = series_cache.forget_taking(
            batch.device_pk, batch.oldest, batch.newest, key, also=[_guard_key(batch.device_id)]
        )
        basis = _basis_of(taken)
        newest = batch.newest_sample
        if basis is None or generation is None or newest is None or not ttl:
            continue
        # Across a quarter's end the answer depends on every reading since its latest
        # sample: only a cache that every process shares has seen them all.
        successor = reports.basis_after(
            basis, batch.readings, batch.timezone, across_quarters=series_cache.shared()
        )
        if successor is None:
            continue
        realtime = reports.realtime_from(batch.device_id, newest, successor)
        series_cache.store_unless_dropped(
            batch.device_pk,
            key,
            _entry(_rendered(realtime), successor),
            ttl,
            generation,
            _guard(batch.device_id, successor),
        )


def _rendered(realtime: reports.Realtime) -> dict:
    return dict(RealtimeSerializer(realtime).data)


def _entry(answer: dict, basis: reports.RealtimeBasis | None) -> dict:
    if basis is None:
        return {"answer": answer, "basis": None}
    return {
        "answer": answer,
        "basis": (
            _BASIS_VERSION,
            basis.device_timezone,
            basis.quarter_start,
            basis.opening_ts,
            basis.latest_ts,
            basis.start_register,
            basis.import_step,
            str(basis.month),
            basis.peak_before_kw,
            basis.latest_import_kwh,
            basis.latest_export_kwh,
        ),
    }


def _basis_of(entry: Any) -> reports.RealtimeBasis | None:
    """The cached entry's basis; None for none, or for an entry of another release."""
    if not isinstance(entry, dict):
        return None
    found = entry.get("basis")
    if not isinstance(found, tuple) or len(found) != 11 or found[0] != _BASIS_VERSION:
        return None
    (
        _,
        tz,
        quarter_start,
        opening_ts,
        latest_ts,
        start_register,
        import_step,
        month,
        peak,
        latest_import,
        latest_export,
    ) = found
    return reports.RealtimeBasis(
        device_timezone=tz,
        quarter_start=quarter_start,
        opening_ts=opening_ts,
        latest_ts=latest_ts,
        start_register=start_register,
        import_step=import_step,
        month=Month.parse(month),
        peak_before_kw=peak,
        latest_import_kwh=latest_import,
        latest_export_kwh=latest_export,
    )
