"""Health alerts: a meter gone quiet, a lapsed P1-port consent, a meter change, an edge
whose spool is backing up (issue 15; docs/INTEGRATIONS.md).

Design:
- ``evaluate(now)`` is the unit of work: it reads what ingest already stored (the newest
  sample, register breaks, quarter rollups) and its own record of each device's newest
  sample when it last looked (SampleArrival), and opens or clears one HealthEpisode per
  device and kind. It never runs in the ingest request:
  ``manage.py run_health_alerts`` calls it every HEALTH_CHECK_INTERVAL_S, then sends
  what is due. A process of its own, not the MQTT publisher's cycle, because webhooks
  must work without a broker; not the ingest-steps worker's, because that worker only
  runs in the deferred ingest mode and a silent meter sends no batch to wake it.
- Once per episode: opening is an INSERT that the partial unique constraint (one open
  episode per device and kind) lets only one evaluator win; clearing is a conditional
  UPDATE (still open) that only one wins. The winner writes the webhook message
  (HealthNotice) in the same transaction, so a crash loses none and sends none twice.
- Delivery is peakguard.delivery's (same retries, lease, HMAC signature, SSRF-safe
  outbound), to the device's peak-guard webhook URL when its guard is enabled. The MQTT
  publisher shows the open episodes on ``<prefix>/<device>/health`` (integrations.mqtt).

The rules:
- stale: no sample for HEALTH_STALE_AFTER_MIN minutes (and the edge is not uploading
  old readings: that is a backlog). Starts when the newest sample got that old. Not
  raised within HEALTH_STALE_AFTER_MIN of ``grace_from`` (the evaluator's start: after
  a server outage every meter looks silent until its edge has uploaded), nor while no
  device at all has a recent sample when there are several (the server's or its
  network's problem, not the meters'; with a single device the two cannot be told
  apart and the alert is raised).
- edge backlog, inferred from the age of what arrives: a newer sample was stored
  since the evaluation before (within ARRIVING_WINDOW), and it was more than
  HEALTH_BACKLOG_AFTER_MIN old already at that earlier evaluation. The edge uploads its
  spool oldest first, so a catching-up edge looks like this; a silent edge whose token
  is still used (a REST sensor reading with it, batches all refused) does not: nothing
  was stored. Not the token's last use: that is written on any authenticated request.
- consent lapsed: a Belgian peak field (average_power_15m_w, monthly_power_peak_w) had
  values in a quarter of the last CONSENT_LOOKBACK and is null in every sample of the
  last CONSENT_GRACE (one odd reading, dropped by the edge, is no lapse). Meters that
  never send the fields (Dutch ones) never raise it. Clears when the fields return.
  Why consent: Fluvius opens the meter's P1 port on the customer's request in Mijn
  Fluvius, for a limited time; when it is not renewed the peak fields go missing while
  power, voltages and currents still arrive (field report with the renewal steps:
  https://github.com/home-assistant/home-assistant.io/issues/33086; Fluvius on the P1
  and S1 user ports: https://www.fluvius.be/nl/veelgestelde-vragen/digitale-meter).
- meter changed: a register break (telemetry.segments records them; a replaced meter
  or an edge pointed at another meter) within METER_CHANGE_HOLD; clears when the hold
  is over. Each break raises once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from integrations.models import HealthEpisode, HealthNotice, SampleArrival
from peakguard import delivery
from peakguard.models import PeakGuard
from telemetry.models import Device, QuarterRollup, RegisterBreak, Sample

logger = logging.getLogger("integrations.health")

# An edge counts as uploading while a newer sample arrived within this; at least a few
# evaluation cycles, so one quiet cycle between two batches is no end of a backlog.
ARRIVING_WINDOW_MIN = timedelta(minutes=5)
CONSENT_LOOKBACK = timedelta(days=3)
CONSENT_GRACE = timedelta(minutes=5)
METER_CHANGE_HOLD = timedelta(hours=24)
# The sample field, its quarter-rollup column, and how the alert names it.
PEAK_FIELDS = (
    ("average_power_15m_w", "meter_avg_15m_w", "running quarter average (1-0:1.4.0)"),
    ("monthly_power_peak_w", "meter_peak_w", "month's peak (1-0:1.6.0)"),
)
RENEW_CONSENT = (
    "In Flanders the grid operator opens the meter's P1 port for a limited time: renew it "
    "in Mijn Fluvius (app or website): Mijn digitale meter > P1-poort openen/sluiten > "
    "poortbeheer vernieuwen. The readings themselves still arrive; only the meter's "
    "capacity-tariff figures are missing until then."
)


@dataclass(frozen=True)
class Thresholds:
    stale_after: timedelta
    backlog_after: timedelta
    arriving_window: timedelta

    @classmethod
    def from_settings(cls) -> Thresholds:
        return cls(
            stale_after=timedelta(minutes=settings.HEALTH_STALE_AFTER_MIN),
            backlog_after=timedelta(minutes=settings.HEALTH_BACKLOG_AFTER_MIN),
            arriving_window=max(
                ARRIVING_WINDOW_MIN, timedelta(seconds=3 * settings.HEALTH_CHECK_INTERVAL_S)
            ),
        )


@dataclass
class Outcome:
    raised: list[HealthEpisode] = field(default_factory=list)
    cleared: list[HealthEpisode] = field(default_factory=list)
    # Several devices and none with a recent sample: stale alerts were held back.
    fleet_silent: bool = False


@dataclass(frozen=True)
class Finding:
    """A problem the device has now."""

    kind: str
    started_at: datetime
    message: str
    details: dict


def _minutes(span: timedelta) -> int:
    return int(span.total_seconds() // 60)


def _local(moment: datetime, device: Device) -> str:
    return moment.astimezone(ZoneInfo(device.timezone)).isoformat()


def _arrival(
    mark: SampleArrival | None, device: Device, newest: datetime | None, now: datetime
) -> SampleArrival:
    """The device's arrival record updated with what this evaluation sees."""
    if mark is None:
        # First look: what is stored says nothing of when it arrived.
        return SampleArrival(device=device, newest=newest, checked_at=now)
    if newest is not None and (mark.newest is None or newest > mark.newest):
        mark.arrived_at = now
        mark.arrival_lag_s = (mark.checked_at - newest).total_seconds()
    mark.newest, mark.checked_at = newest, now
    return mark


def _stale_or_backlog(
    device: Device, newest: datetime, mark: SampleArrival, now: datetime, limits: Thresholds
) -> Finding | None:
    arriving = mark.arrived_at is not None and now - mark.arrived_at <= limits.arriving_window
    lag = timedelta(seconds=mark.arrival_lag_s or 0.0)
    if arriving and lag > limits.backlog_after:
        return Finding(
            HealthEpisode.EDGE_BACKLOG,
            now,
            f"The edge of {device} is uploading readings {_minutes(lag)} minutes old "
            f"(newest stored: {_local(newest, device)}): its spool is backing up. It catches "
            "up by itself; if the lag keeps growing, check the edge's uplink and run "
            "`manage.py edge_status` on it.",
            {"lag_s": round(lag.total_seconds()), "newest_sample": newest.isoformat()},
        )
    if now - newest > limits.stale_after:
        return Finding(
            HealthEpisode.STALE,
            newest + limits.stale_after,
            f"No reading from {device} for {_minutes(now - newest)} minutes (newest: "
            f"{_local(newest, device)}). Check that the edge poller runs and reaches the "
            "server, and that the P1 dongle is powered and on the network.",
            {
                "newest_sample": newest.isoformat(),
                "stale_after_s": round(limits.stale_after.total_seconds()),
            },
        )
    return None


def _lapsed_fields(device: Device, latest: dict) -> list[str]:
    """The peak fields that had values in a recent quarter and none in the last
    CONSENT_GRACE (only asked when the newest sample lacks one)."""
    newest = latest["ts"]
    lapsed = []
    for name, column, _label in PEAK_FIELDS:
        if latest[name] is not None:
            continue
        had = QuarterRollup.objects.filter(
            device_id=device.pk,
            bucket__gte=newest - CONSENT_LOOKBACK,
            **{f"{column}__isnull": False},
        ).exists()
        if not had:
            continue
        recent = Sample.objects.filter(
            device_id=device.pk,
            ts__gte=newest - CONSENT_GRACE,
            ts__lte=newest,
            **{f"{name}__isnull": False},
        ).exists()
        if not recent:
            lapsed.append(name)
    return lapsed


def _consent(
    device: Device, latest: dict, open_episode: HealthEpisode | None, now: datetime
) -> Finding | HealthEpisode | None:
    if open_episode is not None:
        # Open until every field it named is back.
        missing = [f for f in open_episode.details.get("fields", []) if latest[f] is None]
        return open_episode if missing else None
    fields = _lapsed_fields(device, latest)
    if not fields:
        return None
    labels = ", ".join(label for name, _c, label in PEAK_FIELDS if name in fields)
    return Finding(
        HealthEpisode.CONSENT_LAPSED,
        now,
        f"The meter of {device} stopped sending its capacity-tariff figures ({labels}) "
        f"since about {_local(latest['ts'] - CONSENT_GRACE, device)}: the P1-port consent "
        f"probably lapsed. {RENEW_CONSENT}",
        {"fields": fields, "newest_sample": latest["ts"].isoformat()},
    )


def _meter_change(device: Device, breaks: list[RegisterBreak]) -> Finding | None:
    if not breaks:
        return None
    newest = breaks[-1]
    return Finding(
        HealthEpisode.METER_CHANGED,
        newest.ts,
        f"The registers of {device} broke at {_local(newest.ts, device)} ({newest.kind}: "
        f"import {newest.prev_import_kwh:.3f} -> {newest.import_kwh:.3f} kWh): the meter was "
        "replaced or the edge now reads another meter. Energy is counted per register "
        "segment; check the device's register breaks in the admin.",
        {
            "break_ts": newest.ts.isoformat(),
            "kind": newest.kind,
            "prev_import_kwh": newest.prev_import_kwh,
            "import_kwh": newest.import_kwh,
        },
    )


def _open(device: Device, finding: Finding, webhook: bool) -> HealthEpisode | None:
    try:
        with transaction.atomic():
            episode = HealthEpisode.objects.create(
                device=device,
                kind=finding.kind,
                started_at=finding.started_at,
                message=finding.message,
                details=finding.details,
            )
            if webhook:
                HealthNotice.objects.create(
                    episode=episode,
                    device=device,
                    event=HealthNotice.RAISED,
                    next_attempt_at=delivery.first_attempt_at(),
                )
    except IntegrityError:
        return None  # another evaluator opened it (or this break was announced before)
    logger.info("health alert raised: %s", episode)
    return episode


def _clear(episode: HealthEpisode, now: datetime, webhook: bool) -> bool:
    with transaction.atomic():
        if not HealthEpisode.objects.filter(pk=episode.pk, cleared_at__isnull=True).update(
            cleared_at=now
        ):
            return False
        episode.cleared_at = now
        if webhook:
            HealthNotice.objects.create(
                episode=episode,
                device_id=episode.device_id,
                event=HealthNotice.CLEARED,
                next_attempt_at=delivery.first_attempt_at(),
            )
    logger.info("health alert cleared: %s", episode)
    return True


def evaluate(
    now: datetime, device_ids: list[int] | None = None, grace_from: datetime | None = None
) -> Outcome:
    """Open and clear the health episodes of every device (or of ``device_ids``) as of
    ``now``; what was raised and cleared by this call. No stale alert is raised within
    HEALTH_STALE_AFTER_MIN of ``grace_from`` (the evaluator's start; None: no grace)."""
    limits = Thresholds.from_settings()
    devices = list(
        Device.objects.all() if device_ids is None else Device.objects.filter(pk__in=device_ids)
    )
    scope = Q() if device_ids is None else Q(device_id__in=device_ids)
    marks = {m.device_id: m for m in SampleArrival.objects.filter(scope)}
    open_episodes: dict[tuple[int, str], HealthEpisode] = {
        (e.device_id, e.kind): e
        for e in HealthEpisode.objects.filter(scope, cleared_at__isnull=True)
    }
    breaks: dict[int, list[RegisterBreak]] = {}
    for item in RegisterBreak.objects.filter(scope, ts__gte=now - METER_CHANGE_HOLD).order_by("ts"):
        breaks.setdefault(item.device_id, []).append(item)
    guarded = set(PeakGuard.objects.filter(scope, enabled=True).values_list("device_id", flat=True))
    latest_of = {
        device.pk: Sample.objects.filter(device_id=device.pk, ts__lte=now)
        .order_by("-ts")
        .values("ts", *(name for name, _c, _l in PEAK_FIELDS))
        .first()
        for device in devices
    }
    reporting = [latest["ts"] for latest in latest_of.values() if latest is not None]
    outcome = Outcome(
        fleet_silent=len(reporting) > 1 and all(now - ts > limits.stale_after for ts in reporting)
    )
    hold_stale = outcome.fleet_silent or (
        grace_from is not None and now - grace_from < limits.stale_after
    )
    arrivals = []
    for device in devices:
        latest = latest_of[device.pk]
        mark = _arrival(marks.get(device.pk), device, None if latest is None else latest["ts"], now)
        arrivals.append(mark)
        if latest is None:
            continue  # never reported: nothing has gone wrong yet
        activity = _stale_or_backlog(device, latest["ts"], mark, now, limits)
        stale: Finding | HealthEpisode | None = (
            activity if activity and activity.kind == HealthEpisode.STALE else None
        )
        if stale is not None and hold_stale:
            # Not yet known to be the meter's problem: open nothing, clear nothing.
            stale = open_episodes.get((device.pk, HealthEpisode.STALE))
        consent = _consent(
            device, latest, open_episodes.get((device.pk, HealthEpisode.CONSENT_LAPSED)), now
        )
        findings: dict[str, Finding | HealthEpisode | None] = {
            HealthEpisode.STALE: stale,
            HealthEpisode.EDGE_BACKLOG: activity
            if activity and activity.kind == HealthEpisode.EDGE_BACKLOG
            else None,
            HealthEpisode.CONSENT_LAPSED: consent,
            HealthEpisode.METER_CHANGED: _meter_change(device, breaks.get(device.pk, [])),
        }
        webhook = device.pk in guarded
        for kind, finding in findings.items():
            episode = open_episodes.get((device.pk, kind))
            if isinstance(finding, HealthEpisode):
                continue  # still open, still true (or not known to be over)
            if episode is not None and (
                finding is None
                or (
                    kind == HealthEpisode.METER_CHANGED and finding.started_at != episode.started_at
                )
            ):
                if _clear(episode, now, webhook):
                    outcome.cleared.append(episode)
                episode = None
            if finding is not None and episode is None:
                opened = _open(device, finding, webhook)
                if opened is not None:
                    outcome.raised.append(opened)
    SampleArrival.objects.bulk_create(
        arrivals,
        update_conflicts=True,
        unique_fields=["device"],
        update_fields=["newest", "checked_at", "arrived_at", "arrival_lag_s"],
    )
    return outcome


def notice_message(notice: HealthNotice, sent_at: datetime) -> tuple[str, dict] | str:
    """The webhook request of one notice (peakguard.delivery.Outbox.message)."""
    guard = PeakGuard.objects.filter(device_id=notice.device_id, enabled=True).first()
    if guard is None:
        return "peak guard removed or disabled"
    episode, device = notice.episode, notice.device
    return guard.webhook_url, {
        "type": "health_alert",
        "event": notice.event,
        "kind": episode.kind,
        "device": device.device_id,
        "device_name": device.name,
        "started_at": _local(episode.started_at, device),
        "cleared_at": _local(episode.cleared_at, device) if episode.cleared_at else None,
        "message": episode.message,
        "details": episode.details,
        "sent_at": _local(sent_at, device),
    }


HEALTH_NOTICES = delivery.Outbox(
    HealthNotice, "health notice", notice_message, related=("device", "episode")
)


def open_episodes_by_device() -> dict[int, list[HealthEpisode]]:
    """Every open episode, per device (the MQTT publisher's health topic)."""
    grouped: dict[int, list[HealthEpisode]] = {}
    for episode in HealthEpisode.objects.filter(cleared_at__isnull=True).order_by("started_at"):
        grouped.setdefault(episode.device_id, []).append(episode)
    return grouped


def health_payload(device: Device, episodes: list[HealthEpisode]) -> dict:
    """``<prefix>/<device>/health``: ON/OFF per kind (Home Assistant binary sensors of
    device_class problem) and the open alerts' messages."""
    kinds = {e.kind for e in episodes}
    return {
        **{kind: "ON" if kind in kinds else "OFF" for kind, _label in HealthEpisode.KINDS},
        "alerts": [
            {
                "kind": e.kind,
                "started_at": _local(e.started_at, device),
                "message": e.message,
            }
            for e in episodes
        ],
    }
