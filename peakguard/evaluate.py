"""Deciding, after a batch is stored, whether the running quarter crosses a device's guard.

Design:
- The check runs in ``transaction.on_commit`` of the ingest transaction, so it reads
  the committed samples and capacity rows and adds nothing to the time the
  transaction holds its locks. A batch whose newest sample is before the current
  quarter (a backlog arriving late) is dismissed in the receiver without a query: only
  the quarter that is current by the server's clock can fire, never a past one.
- Devices without an enabled guard cost one indexed lookup per batch (device_id is
  unique on PeakGuard); once a quarter has its alert, one more lookup ends the check.
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
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from capacity import reports
from peakguard import delivery
from peakguard.models import PeakAlert, PeakGuard
from telemetry.pipeline import StoredBatch
from telemetry.timegrid import QUARTER, bucket_start

logger = logging.getLogger("peakguard")

# The server's clock; tests replace it to pin "the current quarter".
clock: Callable[[], datetime] = timezone.now


def current_quarter_start(now: datetime) -> datetime:
    return bucket_start(now, QUARTER)


def check_after_batch(batch: StoredBatch) -> None:
    """Ingest step: schedule the check for after the commit."""
    now = clock()
    if batch.newest < current_quarter_start(now):
        return  # a late backlog: its quarters are over, nothing to warn about
    transaction.on_commit(lambda: check_safely(batch.device_pk, now))


def check_safely(device_pk: int, now: datetime) -> None:
    try:
        check(device_pk, now)
    except Exception:
        logger.exception("peak guard check failed for device %s", device_pk)


def check(device_pk: int, now: datetime) -> PeakAlert | None:
    """Raise the alert for the current quarter if its projection crosses the threshold.

    Returns the alert when this call created it, None otherwise.
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
    if PeakAlert.objects.filter(device_id=device_pk, quarter_start=quarter_start).exists():
        return None
    outlook = reports.realtime(guard.device, now)
    quarter, month = outlook.quarter, outlook.month
    if quarter is None or month is None:
        return None  # no sample yet (reports.Realtime sets both or neither)
    if quarter.start != quarter_start:
        return None  # the latest sample is not in the current quarter
    threshold = guard.threshold_kw if guard.threshold_kw is not None else quarter.threshold_kw
    if quarter.projected_kw <= threshold:
        return None
    alert = PeakAlert(
        device_id=device_pk,
        quarter_start=quarter_start,
        quarter_end=quarter.end,
        average_so_far_kw=quarter.average_so_far_kw,
        projected_kw=quarter.projected_kw,
        threshold_kw=threshold,
        month_peak_kw=month.peak_so_far_kw,
        next_attempt_at=delivery.first_attempt_at(),
    )
    # ignore_conflicts: ON CONFLICT DO NOTHING on both PostgreSQL and SQLite.
    PeakAlert.objects.bulk_create([alert], ignore_conflicts=True)
    # The insert does not say whether it won; the row's creation instant does (another
    # process's row for this quarter was made at another microsecond).
    created = PeakAlert.objects.filter(
        device_id=device_pk, quarter_start=quarter_start, created_at=alert.created_at
    ).first()
    if created is None:
        return None  # another batch or process raised it first
    logger.info(
        "peak guard: %s projects %.3f kW for the quarter from %s (threshold %.3f kW)",
        guard.device.device_id,
        alert.projected_kw,
        quarter.start.astimezone(ZoneInfo(outlook.timezone)).isoformat(),
        threshold,
    )
    if in_process:
        delivery.worker.wake()
    return created
