"""The ingest pipeline: a validated batch is stored with the record of the work it
owes; that work (settings.INGEST_STEPS, in the order named) runs after the commit, in
the request itself or, with INGEST_STEPS_WORKER, in the ingest-steps worker.

telemetry sits below capacity and peakguard, so it cannot import their work; the
project's settings name it instead, as MIDDLEWARE does for requests. The path from a
request to every table it writes is: telemetry.views -> this module's ``ingest_batch``
-> the storage plan's insert_batch (samples, rollups and a PendingBatch row, one
statement on PostgreSQL) -> settings.INGEST_RECEIPT_STEPS (in the request, after the
commit) -> ``run_owed_steps``: per device, the owed spans merged, the register breaks
refreshed and each step called once per chunk of devices with their typed
``StoredBatch`` spans (a step does one statement for all of them, not one per device),
in one commit with the deletion of the PendingBatch rows it did. A step that must see
that commit (a cache invalidation, a check that reads other connections) schedules
itself with ``transaction.on_commit``.

Why a record instead of doing the work in the request's own commit: the work per batch
is several statements, and done every few seconds per household it bounded how many
households a server carries (docs/SCALING.md). Recorded, it can be done for many
batches of a device at once, by one worker, while every promise holds: the samples
are stored before the answer, and the work is never lost, only late (by at most the
worker's interval and one cycle), because its record goes only with the work done.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import transaction
from django.dispatch import receiver
from django.utils.module_loading import import_string
from rest_framework import exceptions

from p1common.problems import PayloadTooLarge, UnprocessableBatch
from p1wire import SAMPLE_FIELDS, TARIFF, TIMESTAMP
from telemetry import quarantine, segments
from telemetry.models import Device, PendingBatch
from telemetry.pacing import Pace
from telemetry.storage import StoragePlan, plan_for, timestamps
from telemetry.tokens import record_uses
from telemetry.validation import validate_samples


@dataclass(frozen=True)
class StoredBatch:
    """What a step learns of a batch that added rows: whose, which span, how many, and
    in a receipt step (the batch's own request) its newest sample, every field as the
    database hands it back (None: a step run by the worker, from the batch's record)."""

    device_pk: int
    device_id: str
    timezone: str
    oldest: datetime
    newest: datetime
    inserted: int
    newest_sample: dict[str, Any] | None = None
    # In INGEST_STEPS: whether the device's register breaks changed in this commit.
    breaks_changed: bool = True
    # In a receipt step: the batch's validated columns (wire.SAMPLE_FIELDS order).
    columns: list[list[Any] | None] | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def readings(self) -> tuple[segments.RegisterReading, ...]:
        """Every sample's registers in time order (none outside a receipt step): made
        only when asked, by the few batches whose device has a cached answer."""
        return () if self.columns is None else register_readings(self.columns)


# Called with the stored batches of a chunk of devices, in device order (spans of one
# device in time order), or with the one batch of a request.
Step = Callable[[Sequence[StoredBatch]], None]


logger = logging.getLogger(__name__)

# Spans of one device this close together are one span for the steps; spans further
# apart (a backlog from last winter beside today's batch) are done each on its own, so
# the work stays proportional to what arrived.
MERGE_GAP = timedelta(minutes=30)
# A run reads at most this many records (a worker back after a long stop works through
# the backlog in runs of bounded memory); deletes go in slices SQLite can bind.
MAX_RECORDS_PER_RUN = 50_000
_DELETE_SLICE = 900


def _import_steps(setting: str) -> tuple[Step, ...]:
    found = []
    for path in getattr(settings, setting):
        try:
            found.append(import_string(path))
        except ModuleNotFoundError as exc:
            if exc.name is not None and not path.startswith(exc.name):
                raise  # a package the step needs is missing, not the step: the install's
            raise ImproperlyConfigured(f"{setting}: cannot import {path!r} ({exc})") from exc
        except ImportError as exc:
            raise ImproperlyConfigured(f"{setting}: cannot import {path!r} ({exc})") from exc
    return tuple(found)


@functools.cache
def steps() -> tuple[Step, ...]:
    """settings.INGEST_STEPS, imported once per process (again after a test overrides
    the setting)."""
    return _import_steps("INGEST_STEPS")


@functools.cache
def receipt_steps() -> tuple[Step, ...]:
    """settings.INGEST_RECEIPT_STEPS: what a batch that added rows does in its own
    request, after its commit, when the worker does INGEST_STEPS later (without one,
    INGEST_STEPS run right there and include them)."""
    return _import_steps("INGEST_RECEIPT_STEPS")


@receiver(setting_changed)
def _forget_steps(setting: str, **kwargs: Any) -> None:
    if setting == "INGEST_STEPS":
        steps.cache_clear()
    elif setting == "INGEST_RECEIPT_STEPS":
        receipt_steps.cache_clear()


def ingest_batch(
    device: Device, columns: list[list[Any] | None], token_pk: int | None = None
) -> int:
    """Store one validated batch (wire.SAMPLE_FIELDS order) sent with token ``token_pk``,
    then, with a worker, the receipt steps, and without one the steps it owes; returns
    how many rows were new. A batch of duplicates owes nothing and runs no step."""
    inserted = plan_for().insert_batch(device.pk, columns, token_pk)
    if not inserted:
        return 0
    if settings.INGEST_STEPS_WORKER:
        ts = timestamps(columns)
        newest = max(ts)
        batch = StoredBatch(
            device.pk,
            device.device_id,
            device.timezone,
            min(ts),
            newest,
            inserted,
            newest_sample=stored_row(columns, ts.index(newest)),
            columns=columns,
        )
        for step in receipt_steps():
            step([batch])
    else:
        try:
            run_owed_steps([device.pk])
        except Exception:
            # The batch is stored and its record kept: this device's next batch, or
            # the worker, does the work. The answer stays the truth: stored.
            logger.exception("ingest steps failed for device %s; left owed", device.device_id)
    return inserted


_IMPORT = list(SAMPLE_FIELDS).index("energy_import_kwh")
_EXPORT = list(SAMPLE_FIELDS).index("energy_export_kwh")


def register_readings(columns: list[list[Any] | None]) -> tuple[segments.RegisterReading, ...]:
    """The registers of validated columns, one reading per sample in time order."""
    imports = columns[_IMPORT]
    if imports is None:
        raise ValueError("energy_import_kwh is a required wire field, not None")
    exports = columns[_EXPORT] or [None] * len(imports)
    readings = (
        segments.RegisterReading(ts.astimezone(UTC), float(i), None if e is None else float(e))
        for ts, i, e in zip(timestamps(columns), imports, exports, strict=True)
    )
    return tuple(sorted(readings, key=lambda r: r.ts))


def stored_row(columns: list[list[Any] | None], index: int) -> dict[str, Any]:
    """Sample ``index`` of validated columns as the database hands it back: every
    wire.SAMPLE_FIELDS field, numbers as the column's type, times in UTC."""
    row: dict[str, Any] = {}
    for (name, kind), column in zip(SAMPLE_FIELDS.items(), columns, strict=True):
        value = None if column is None else column[index]
        if value is None:
            row[name] = None
        elif kind == TIMESTAMP:
            row[name] = value.astimezone(UTC)
        elif kind == TARIFF:
            row[name] = int(value)
        else:
            row[name] = float(value)
    return row


@dataclass(frozen=True)
class OwedRun:
    """What one run of the owed steps did."""

    devices: int
    batches: int
    failed_devices: int


@dataclass
class _Span:
    oldest: datetime
    newest: datetime
    inserted: int


def _merged(spans: list[_Span]) -> list[_Span]:
    """Spans in time order, those within MERGE_GAP of each other made one."""
    merged: list[_Span] = []
    for span in sorted(spans, key=lambda s: s.oldest):
        if merged and span.oldest <= merged[-1].newest + MERGE_GAP:
            last = merged[-1]
            last.newest = max(last.newest, span.newest)
            last.inserted += span.inserted
        else:
            merged.append(_Span(span.oldest, span.newest, span.inserted))
    return merged


@dataclass
class _Owed:
    device_pk: int
    ids: list[int]
    spans: list[_Span]
    # Each token's latest batch, for its "last used" time.
    tokens: dict[int, datetime]


def _owed(device_pks: Collection[int] | None) -> list[_Owed]:
    """The oldest MAX_RECORDS_PER_RUN records, per device in device order (the order the
    register-break locks are taken in, so concurrent runs cannot deadlock)."""
    rows = PendingBatch.objects.order_by("id")
    if device_pks is not None:
        rows = rows.filter(device_id__in=list(device_pks))
    found: dict[int, _Owed] = {}
    for pk, device_pk, token_pk, oldest, newest, inserted, received_at in rows.values_list(
        "id", "device_id", "token_id", "oldest", "newest", "inserted", "received_at"
    )[:MAX_RECORDS_PER_RUN]:
        owed = found.setdefault(device_pk, _Owed(device_pk, [], [], {}))
        owed.ids.append(pk)
        owed.spans.append(_Span(oldest, newest, inserted))
        if token_pk is not None:
            owed.tokens[token_pk] = max(received_at, owed.tokens.get(token_pk, received_at))
    return [found[pk] for pk in sorted(found)]


def _chunks(items: list[_Owed], size: int) -> Iterator[list[_Owed]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def run_owed_steps(
    device_pks: Collection[int] | None = None,
    chunk: int = 100,
    stop: threading.Event | None = None,
    pace: Pace | None = None,
) -> OwedRun:
    """Do the steps owed for stored batches: of all devices, or of ``device_pks``.

    Per device, its owed spans are merged, the register breaks refreshed over each and
    every INGEST_STEPS step called with it; ``chunk`` devices commit together with the
    deletion of exactly the records read (a batch stored meanwhile keeps its own, for
    the next run). A device whose steps fail keeps its records and is logged; the others
    go on. ``stop``, once set, ends the run after the chunk in progress (what is left
    stays owed). ``pace``: rest after reading the records and between chunks
    (telemetry.pacing), timed on its clock.
    Concurrent runs are safe: each device's work is serialised by the register-break
    lock and is idempotent.
    """
    began = pace.clock() if pace is not None else 0.0
    owed = _owed(device_pks)
    if not owed:
        return OwedRun(0, 0, 0)
    plan = plan_for()
    failed = done = 0
    groups = list(_chunks(owed, chunk))
    # Reading a cycle's records is work as a chunk's is, and with many devices it was
    # the cycle's first burst: it rests after it too. Each chunk reads its own devices.
    took = pace.clock() - began if pace is not None else 0.0
    for index, group in enumerate(groups):
        if pace is not None:
            pace.after_chunk(took, len(groups) - index)
        if stop is not None and stop.is_set():
            break
        began = pace.clock() if pace is not None else 0.0
        done += len(group)
        failed += _do_chunk(plan, group, _identities([o.device_pk for o in group]))
        took = pace.clock() - began if pace is not None else 0.0
    return OwedRun(done, sum(len(o.ids) for o in owed[:done]), failed)


@dataclass(frozen=True)
class _Identity:
    """What a step's StoredBatch needs of its device: model instances cost the worker a
    tenth of its Python at many devices a cycle."""

    device_id: str
    timezone: str


def _identities(device_pks: list[int]) -> dict[int, _Identity]:
    rows = Device.objects.filter(pk__in=device_pks).values_list("pk", "device_id", "timezone")
    return {pk: _Identity(device_id, timezone) for pk, device_id, timezone in rows}


def _do_chunk(plan: StoragePlan, group: list[_Owed], devices: dict[int, _Identity]) -> int:
    """One chunk's steps in one commit; the devices that failed, each alone."""
    for item in group:
        item.spans = _merged(item.spans)
    try:
        _refresh_and_commit(plan, group, devices)
        return 0
    except Exception:
        if len(group) == 1:
            logger.exception("ingest steps failed for device pk %s", group[0].device_pk)
            return 1
    # One device's failure must not hold the others back: each alone, and each refreshed
    # again, since the failure may have been the refresh itself.
    failed = 0
    for item in group:
        try:
            _refresh_and_commit(plan, [item], devices)
        except Exception:
            failed += 1
            logger.exception("ingest steps failed for device pk %s", item.device_pk)
    return failed


def _refresh_and_commit(
    plan: StoragePlan, group: list[_Owed], devices: dict[int, _Identity]
) -> None:
    """The steps read the rollups; where the plan keeps them apart from the samples
    (continuous aggregates), they are brought up to date first. A refresh that fails
    raises, so the group's records stay owed rather than being done on stale rollups."""
    for item in group:
        for span in item.spans:
            plan.refresh_before_steps(span.oldest, span.newest)
    _commit_steps(group, devices)


def _commit_steps(group: list[_Owed], devices: dict[int, _Identity]) -> None:
    batches = [
        StoredBatch(
            item.device_pk,
            device.device_id,
            device.timezone,
            span.oldest,
            span.newest,
            span.inserted,
        )
        for item in group
        if (device := devices.get(item.device_pk)) is not None  # else deleted meanwhile:
        for span in item.spans  # its records went with it
    ]
    with transaction.atomic():
        changed = segments.refresh_breaks_over([(b.device_pk, b.oldest, b.newest) for b in batches])
        batches = [replace(b, breaks_changed=b.device_pk in changed) for b in batches]
        if batches:
            for step in steps():
                step(batches)
        record_uses({pk: used for item in group for pk, used in item.tokens.items()})
        done = [i for item in group for i in item.ids]
        for start in range(0, len(done), _DELETE_SLICE):
            PendingBatch.objects.filter(id__in=done[start : start + _DELETE_SLICE]).delete()


def accept_batch(
    device: Device, batch: dict[str, Any], now: datetime, token_pk: int | None = None
) -> dict[str, int]:
    """The batch rules of ``POST /v1/ingest`` (sent with token ``token_pk``): all or
    nothing, a refused batch recorded in quarantine and nothing else written; returns
    the answer's counts."""
    if "device_id" in batch:
        named = batch["device_id"]
        if type(named) is not str:
            # The schema says a string when given; null is not "left out".
            raise exceptions.ValidationError({"device_id": ["Must be a string when given."]})
        if named != device.device_id:
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
    inserted = ingest_batch(device, columns, token_pk)
    received = len(timestamps(columns))
    return {"received": received, "inserted": inserted, "duplicates": received - inserted}
