"""Sending peak alerts to their webhooks, never on the ingest request's thread.

Design:
- The PeakAlert row is the outbox: it is durable before anything is sent, so a crash
  or restart loses no alert. Delivery is at least once: a process that dies after the
  receiver answered but before it recorded that leaves the row to be sent again when
  its lease expires. Receivers can recognise a repeat by (device, quarter_start).
- Each server process runs one daemon thread (``worker``), started lazily by the first
  batch of a guarded device and woken when an alert is raised. It sleeps until the
  next retry is due (or ``IDLE_POLL_S``, to pick up rows another process left behind).
  ``manage.py deliver_peak_alerts`` runs the same ``deliver_due`` as a separate
  process for deployments that set PEAKGUARD_IN_PROCESS_DELIVERY=false.
- Several processes may scan at once. A row is claimed with one conditional UPDATE
  (still undelivered, due, and not leased or its lease expired), which only one of
  them can win; the winner holds a lease of ``LEASE`` (far longer than one attempt
  may take, outbound.TIMEOUT_S) while it sends.
- Attempts follow PEAKGUARD_RETRY_DELAYS_S (default 0, 5, 30 seconds: the first one
  at once, then after 5 s and 30 s); after the last failure the row is marked given
  up. A refused target (outbound.WebhookRefused) is not retried: it cannot succeed.
  Every failure is logged on the ``peakguard`` logger.
- The body is JSON with the alert's figures; local times in the device's zone, as
  the API answers. With PEAKGUARD_WEBHOOK_SECRET set, an HMAC-SHA256 of the exact
  body is sent in X-P1-Signature-256 ("sha256=<hex>"), as GitHub does.
- The same claim/attempt/retry code sends every outbox (``Outbox``): peak alerts here,
  the health alerts of integrations.health through the same guard's webhook URL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import threading
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ObjectDoesNotExist
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from peakguard import outbound
from peakguard.models import PeakAlert, WebhookOutbox

logger = logging.getLogger("peakguard")

USER_AGENT = "P1-Platform-PeakGuard/1 (P1 Platform peak guard webhook)"
SIGNATURE_HEADER = "X-P1-Signature-256"
LEASE = timedelta(seconds=60)
IDLE_POLL_S = 60.0
CLAIM_BATCH = 10


def retry_delays() -> tuple[float, ...]:
    """Seconds to wait before each attempt (the first usually 0); its length is the
    number of attempts."""
    raw = settings.PEAKGUARD_RETRY_DELAYS_S
    try:
        delays = tuple(float(item) for item in raw)
    except ValueError:
        delays = ()
    if not delays or not all(math.isfinite(d) and d >= 0 for d in delays):
        raise ImproperlyConfigured(
            "PEAKGUARD_RETRY_DELAYS_S: expected comma-separated seconds like 0,5,30, "
            f"got {','.join(raw)!r}"
        )
    return delays


def first_attempt_at() -> datetime:
    return timezone.now() + timedelta(seconds=retry_delays()[0])


def payload(alert: PeakAlert, sent_at: datetime) -> dict:
    device = alert.device
    tz = ZoneInfo(device.timezone)
    return {
        "device": device.device_id,
        "device_name": device.name,
        "quarter_start": alert.quarter_start.astimezone(tz).isoformat(),
        "quarter_end": alert.quarter_end.astimezone(tz).isoformat(),
        "average_so_far_kw": alert.average_so_far_kw,
        "projected_kw": alert.projected_kw,
        "threshold_kw": alert.threshold_kw,
        "month_peak_kw": alert.month_peak_kw,
        "sent_at": sent_at.astimezone(tz).isoformat(),
        "kind": alert.kind,
        "target_kw": alert.target_kw,
    }


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _claimable(now: datetime) -> Q:
    return Q(
        delivered_at__isnull=True,
        gave_up_at__isnull=True,
        next_attempt_at__lte=now,
    ) & (Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))


@dataclass(frozen=True)
class Outbox:
    """A model of webhook messages (a WebhookOutbox) and how one of its rows is sent:
    ``message(row, sent_at)`` gives the URL and JSON body, or a reason it cannot be
    sent any more (e.g. the guard was removed), which finishes the row as failed."""

    model: type[WebhookOutbox]
    what: str  # in the log: "peak alert 12 for <device>"
    message: Callable[[typing.Any, datetime], tuple[str, dict] | str]
    related: tuple[str, ...] = ("device",)

    @property
    def rows(self) -> QuerySet[typing.Any]:
        return self.model._default_manager.all()


def _peak_alert_message(alert: PeakAlert, sent_at: datetime) -> tuple[str, dict] | str:
    try:
        guard = alert.device.peak_guard
    except ObjectDoesNotExist:
        guard = None
    if guard is None or not guard.enabled:
        return "peak guard removed or disabled"
    return guard.webhook_url, payload(alert, sent_at)


PEAK_ALERTS = Outbox(PeakAlert, "peak alert", _peak_alert_message)


def claim_due(now: datetime, limit: int = CLAIM_BATCH, outbox: Outbox = PEAK_ALERTS) -> list[int]:
    """Lease up to ``limit`` due rows to this caller; ids of the ones it won."""
    rows = outbox.rows
    candidates = list(
        rows.filter(_claimable(now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    won = []
    for pk in candidates:
        # The same condition again, in the UPDATE: of two racing claimers one matches.
        if rows.filter(_claimable(now), pk=pk).update(claimed_until=now + LEASE):
            won.append(pk)
    return won


def attempt(pk: int, outbox: Outbox = PEAK_ALERTS) -> str:
    """Send one claimed row once and record the outcome: delivered, retry or failed."""
    rows = outbox.rows
    row = rows.select_related(*outbox.related).get(pk=pk)
    label = f"{outbox.what} {pk} for {row.device.device_id}"
    number = row.attempts + 1
    delays = retry_delays()
    now = timezone.now()
    message = outbox.message(row, now)
    if isinstance(message, str):
        return _finish(outbox, pk, now, number - 1, error=message)
    url, document = message
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = {"User-Agent": USER_AGENT}
    secret = settings.PEAKGUARD_WEBHOOK_SECRET
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    try:
        outbound.post_json(
            url,
            body,
            headers,
            allow_private=settings.PEAKGUARD_ALLOW_PRIVATE_TARGETS,
        )
    except outbound.WebhookRefused as exc:
        logger.warning("%s refused, not retried: %s", label, exc)
        return _finish(outbox, pk, timezone.now(), number, error=f"refused: {exc}")
    except outbound.WebhookFailed as exc:
        if number >= len(delays):
            logger.warning(
                "%s: attempt %d of %d failed, giving up: %s", label, number, len(delays), exc
            )
            return _finish(outbox, pk, timezone.now(), number, error=str(exc))
        logger.warning(
            "%s: attempt %d of %d failed, retrying in %g s: %s",
            label,
            number,
            len(delays),
            delays[number],
            exc,
        )
        rows.filter(pk=pk).update(
            attempts=number,
            last_error=str(exc),
            claimed_until=None,
            next_attempt_at=timezone.now() + timedelta(seconds=delays[number]),
        )
        return "retry"
    rows.filter(pk=pk).update(attempts=number, delivered_at=timezone.now(), claimed_until=None)
    logger.info("%s delivered", label)
    return "delivered"


def _finish(outbox: Outbox, pk: int, now: datetime, attempts: int, error: str) -> str:
    outbox.rows.filter(pk=pk).update(
        attempts=attempts, gave_up_at=now, last_error=error, claimed_until=None
    )
    return "failed"


def deliver_due(outbox: Outbox = PEAK_ALERTS) -> float | None:
    """Send every row that is due; seconds until the next one is, None when none waits."""
    while True:
        claimed = claim_due(timezone.now(), outbox=outbox)
        if not claimed:
            break
        for pk in claimed:
            attempt(pk, outbox)
    pending = outbox.rows.filter(delivered_at__isnull=True, gave_up_at__isnull=True)
    now = timezone.now()
    waits = [
        max(due, lease or due) - now
        for due, lease in pending.order_by("next_attempt_at").values_list(
            "next_attempt_at", "claimed_until"
        )[:50]
    ]
    if not waits:
        return None
    return max(min(waits).total_seconds(), 0.0)


class Worker:
    """The per-process delivery thread (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def ensure_started(self) -> None:
        if self._running():
            return
        with self._lock:
            if self._running():
                return
            # A forked child inherits the object but not the thread: start its own.
            self._stop.clear()
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="peakguard-delivery", daemon=True
            )
            self._thread.start()

    def _running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive() and self._pid == os.getpid()

    def wake(self) -> None:
        self.ensure_started()
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the thread after its current attempt (tests, shutdown)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout_s)
        self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            wait: float | None = IDLE_POLL_S
            try:
                wait = deliver_due()
            except Exception:
                logger.exception("peak alert delivery failed; trying again in %g s", IDLE_POLL_S)
                wait = IDLE_POLL_S
            finally:
                # The thread sleeps between alerts: it must not keep a connection open.
                connection.close()
            self._wake.wait(IDLE_POLL_S if wait is None else min(wait, IDLE_POLL_S))


worker = Worker()
