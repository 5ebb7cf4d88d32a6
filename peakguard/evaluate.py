"""Deciding, after a batch is stored, whether the running quarter crosses a device's guard.

Design:
- The check runs in ``transaction.on_commit`` of the ingest transaction, so it reads
  the committed samples and capacity rows and adds nothing to the time the
  transaction holds its locks. A batch whose newest sample is before the current
  quarter (a backlog arriving late) is dismissed in the receiver without a query: only
  the quarter that is current by the server's clock can fire, never a past one.
- Devices without an enabled guard cost a share of one lookup per chunk of devices
  the steps do together (device_id is unique on PeakGuard); once a quarter has its
  alert, one more lookup ends the check.
- The projection is capacity.reports.realtime's, the figure the dashboard shows, so
  the rule lives in one place. The default threshold is the one realtime reports:
  the month's billed peak so far, max(highest quarter, 2.5 kW) - a quarter below
  2.5 kW never raises the bill, so warning about it would be noise. An explicit
  threshold is the user's own number and is used as is (it may be lower, e.g. to
  warn early). A quarter crosses when its projection is above the threshold, as in
  realtime's ``exceeds_threshold``.
- The alert is INSERT ... ON CONFLICT DO NOTHING on the unique (device, quarter_start):
  exactly one row per quarter however many batches, retries and worker processes see
  the crossing. The row is the outbox; peakguard.delivery sends it off this thread.
- A failure here is logged and swallowed: the batch is already committed and its
  answer must not turn into an error (the next batch checks again).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from capacity import reports, rules
from peakguard import delivery
from peakguard.models import PeakAlert, PeakGuard
from telemetry.pipeline import StoredBatch
from telemetry.timegrid import QUARTER, bucket_start

logger = logging.getLogger("peakguard")

# The server's clock; tests replace it to pin "the current quarter".
clock: Callable[[], datetime] = timezone.now


def current_quarter_start(now: datetime) -> datetime:
    return bucket_start(now, QUARTER)


def check_after_batches(batches: Sequence[StoredBatch]) -> None:
    """Ingest step: schedule the check of the batches' guarded devices for after the
    commit."""
    now = clock()
    current = current_quarter_start(now)
    # A late backlog's quarters are over: nothing to warn about.
    live = sorted({b.device_pk for b in batches if b.newest >= current})
    if live:
        transaction.on_commit(lambda: check_guarded(live, now))


def check_guarded(device_pks: Sequence[int], now: datetime) -> None:
    """Check those of the devices that have an enabled guard (one lookup for all)."""
    try:
        guarded = list(
            PeakGuard.objects.filter(device_id__in=device_pks, enabled=True)
            .order_by("device_id")
            .values_list("device_id", flat=True)
        )
    except Exception:
        logger.exception("peak guard lookup failed for devices %s", list(device_pks))
        return
    for device_pk in guarded:
        check_safely(device_pk, now)


def check_safely(device_pk: int, now: datetime) -> None:
    try:
        check(device_pk, now)
    except Exception:
        logger.exception("peak guard check failed for device %s", device_pk)


def check(device_pk: int, now: datetime) -> PeakAlert | None:
    """Raise the current quarter's alerts: ``projected`` once its projection crosses the
    threshold, ``broken`` once it can no longer end below it (capacity.rules.
    certainly_above). The threshold: the guard's own, else the household's target
    peak, else the month's billed peak so far.

    Returns the alert this call created (the projected one when it made both), None
    when it made none.
    """
    guard = (
        PeakGuard.objects.select_related("device").filter(device_id=device_pk, enabled=True).first()
    )
    if guard is None:
        return None
    in_process = settings.PEAKGUARD_IN_PROCESS_DELIVERY
    if in_process:
        # Also after a restart: undelivered rows of this device are picked up.
        delivery.worker.ensure_started()
    quarter_start = current_quarter_start(now)
    raised = set(
        PeakAlert.objects.filter(device_id=device_pk, quarter_start=quarter_start).values_list(
            "kind", flat=True
        )
    )
    if raised >= {PeakAlert.PROJECTED, PeakAlert.BROKEN}:
        return None
    outlook = reports.realtime(guard.device, now)
    quarter, month = outlook.quarter, outlook.month
    if quarter is None or month is None:
        return None  # no sample yet (reports.Realtime sets both or neither)
    if quarter.start != quarter_start:
        return None  # the latest sample is not in the current quarter
    threshold = next(
        kw for kw in (guard.threshold_kw, guard.target_kw, quarter.threshold_kw) if kw is not None
    )
    due = []
    if quarter.projected_kw > threshold:
        due.append(PeakAlert.PROJECTED)
    if rules.certainly_above(quarter.energy_so_far_kwh, threshold):
        due.append(PeakAlert.BROKEN)
    created = [
        alert
        for kind in due
        if kind not in raised
        and (alert := _raise(guard, outlook, quarter, month, kind, threshold)) is not None
    ]
    if not created:
        return None
    if in_process:
        delivery.worker.wake()
    return created[0]


def _raise(
    guard: PeakGuard,
    outlook: reports.Realtime,
    quarter: reports.QuarterSoFar,
    month: reports.MonthSoFar,
    kind: str,
    threshold: float,
) -> PeakAlert | None:
    device_pk = guard.device_id
    alert = PeakAlert(
        device_id=device_pk,
        quarter_start=quarter.start,
        kind=kind,
        quarter_end=quarter.end,
        average_so_far_kw=quarter.average_so_far_kw,
        projected_kw=quarter.projected_kw,
        threshold_kw=threshold,
        month_peak_kw=month.peak_so_far_kw,
        target_kw=guard.target_kw,
        next_attempt_at=delivery.first_attempt_at(),
    )
    # ignore_conflicts: ON CONFLICT DO NOTHING on both PostgreSQL and SQLite.
    PeakAlert.objects.bulk_create([alert], ignore_conflicts=True)
    # The insert does not say whether it won; the row's creation instant does (another
    # process's row for this quarter was made at another microsecond).
    created = PeakAlert.objects.filter(
        device_id=device_pk, quarter_start=quarter.start, kind=kind, created_at=alert.created_at
    ).first()
    if created is None:
        return None  # another batch or process raised it first
    logger.info(
        "peak guard: %s %s for the quarter from %s (projected %.3f kW, threshold %.3f kW)",
        guard.device.device_id,
        "certainly breaks its peak" if kind == PeakAlert.BROKEN else "projects above",
        quarter.start.astimezone(ZoneInfo(outlook.timezone)).isoformat(),
        alert.projected_kw,
        threshold,
    )
    return created
