"""Health alerts (issue 15, point 4): evaluated over what real ingests stored
(telemetry.pipeline.accept_batch, the rules of POST /v1/ingest), delivered by
peakguard.delivery to a real HTTP receiver, once per episode, cleared once.

Times are anchored to the real clock: the ingest token's last use and the delivery
schedule are the database's and the server's own moments, so ``evaluate`` is asked
about "now" and about moments after it.

The P1-consent rule follows a field report from Flanders: when the grid operator's
P1-port opening lapses, the peak registers go missing while power, voltages and
currents still arrive, and the fix is renewing it in Mijn Fluvius (Mijn digitale
meter > P1 poort openen/sluiten): https://github.com/home-assistant/home-assistant.io/issues/33086
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.health import HEALTH_NOTICES, evaluate
from integrations.models import HealthEpisode, HealthNotice
from peakguard import delivery
from peakguard.models import PeakGuard
from telemetry.models import DeviceToken, RegisterBreak
from telemetry.pipeline import accept_batch
from tests.peakguard.receivers import Receiver
from tests.samples import sample

pytestmark = pytest.mark.django_db
SECRET = "health-test-secret"


@pytest.fixture(autouse=True)
def fast_local_delivery(settings):
    settings.PEAKGUARD_ALLOW_PRIVATE_TARGETS = True
    settings.PEAKGUARD_RETRY_DELAYS_S = ["0"]
    settings.PEAKGUARD_WEBHOOK_SECRET = SECRET
    settings.HEALTH_STALE_AFTER_MIN = 15
    settings.HEALTH_BACKLOG_AFTER_MIN = 15


@pytest.fixture
def receiver():
    with Receiver() as hook:
        yield hook


@pytest.fixture
def guarded(device, receiver):
    PeakGuard.objects.create(device=device, webhook_url=receiver.url)
    return device


def store(device, samples: list[dict], token_pk: int | None = None) -> None:
    answer = accept_batch(device, {"samples": samples}, timezone.now(), token_pk)
    assert answer["received"] == len(samples), answer


def readings(start: datetime, minutes: float, step_s: int = 10, **fields) -> list[dict]:
    count = int(minutes * 60 / step_s)
    return [sample(start + timedelta(seconds=i * step_s), **fields) for i in range(count)]


def kinds(episodes: list[HealthEpisode]) -> list[str]:
    return sorted(e.kind for e in episodes)


def now_s() -> datetime:
    return timezone.now().replace(microsecond=0)


def test_a_quiet_meter_raises_one_stale_alert_through_the_webhook_and_clears_when_readings_return(
    guarded, receiver
):
    last = now_s() - timedelta(minutes=45)
    store(guarded, readings(last - timedelta(minutes=10), 10.1))
    assert evaluate(last + timedelta(minutes=10)).raised == []

    raised = evaluate(last + timedelta(minutes=16)).raised
    assert kinds(raised) == ["stale"]
    assert evaluate(last + timedelta(minutes=20)).raised == [], "once per episode"
    assert delivery.deliver_due(HEALTH_NOTICES) is None
    (hook,) = receiver.wait_for(1)
    body = hook.json
    assert (body["type"], body["event"], body["kind"], body["device"]) == (
        "health_alert",
        "raised",
        "stale",
        guarded.device_id,
    )
    assert "No reading from" in body["message"]
    assert hook.headers[delivery.SIGNATURE_HEADER] == delivery.sign(hook.body, SECRET)

    back = last + timedelta(minutes=21)
    store(guarded, [sample(back)])
    outcome = evaluate(back + timedelta(seconds=5))
    assert kinds(outcome.cleared) == ["stale"] and outcome.raised == []
    assert evaluate(back + timedelta(seconds=10)).cleared == [], "cleared once"
    delivery.deliver_due(HEALTH_NOTICES)
    assert [r.json["event"] for r in receiver.wait_for(2)] == ["raised", "cleared"]
    assert receiver.received[1].json["cleared_at"] is not None

    # Quiet again: a new episode.
    assert kinds(evaluate(back + timedelta(minutes=16)).raised) == ["stale"]
    assert HealthEpisode.objects.filter(device=guarded, kind="stale").count() == 2


def test_one_open_episode_per_device_and_kind_is_enforced_by_the_database(device):
    started = now_s()
    HealthEpisode.objects.create(device=device, kind="stale", started_at=started, message="m")
    with pytest.raises(IntegrityError), transaction.atomic():
        HealthEpisode.objects.create(
            device=device, kind="stale", started_at=started + timedelta(minutes=1), message="m"
        )


def test_peak_fields_turning_null_raise_consent_lapsed_naming_what_to_renew_and_where(
    guarded, receiver
):
    start = now_s() - timedelta(minutes=60)
    store(guarded, readings(start, 30))
    # The consent lapses: the meter's two capacity-tariff registers vanish.
    lapse = start + timedelta(minutes=30)
    store(guarded, readings(lapse, 2, average_power_15m_w=None, monthly_power_peak_w=None))
    at = lapse + timedelta(minutes=2)
    assert evaluate(at).raised == [], "two minutes without them is within the grace"

    store(
        guarded,
        readings(
            lapse + timedelta(minutes=2), 8, average_power_15m_w=None, monthly_power_peak_w=None
        ),
    )
    at = lapse + timedelta(minutes=10)
    raised = evaluate(at).raised
    assert kinds(raised) == ["consent_lapsed"]
    message = raised[0].message
    assert "Mijn Fluvius" in message and "P1-poort" in message and "vernieuwen" in message
    assert "1-0:1.6.0" in message and "1-0:1.4.0" in message
    assert raised[0].details["fields"] == ["average_power_15m_w", "monthly_power_peak_w"]
    assert evaluate(at + timedelta(seconds=30)).raised == []
    delivery.deliver_due(HEALTH_NOTICES)
    assert receiver.wait_for(1)[0].json["kind"] == "consent_lapsed"

    renewed = lapse + timedelta(minutes=11)
    store(guarded, readings(renewed, 1))
    assert kinds(evaluate(renewed + timedelta(minutes=1)).cleared) == ["consent_lapsed"]


def test_a_meter_that_never_sent_peak_fields_raises_no_consent_alert(device):
    # A Dutch meter (DSMR 5 without 1-0:1.4.0/1.6.0): the fields were never there.
    start = now_s() - timedelta(minutes=30)
    store(device, readings(start, 29, average_power_15m_w=None, monthly_power_peak_w=None))
    assert evaluate(start + timedelta(minutes=29)).raised == []


def test_a_meter_change_raises_once_per_register_break_and_clears_after_a_day(device):
    start = now_s() - timedelta(hours=2)
    old = readings(start, 10)
    new = [
        sample(start + timedelta(minutes=11, seconds=10 * i), energy_import_kwh=0.5 + i / 3600)
        for i in range(30)
    ]
    store(device, old + new)
    (change,) = RegisterBreak.objects.filter(device=device)
    at = change.ts + timedelta(seconds=300)
    raised = evaluate(at).raised
    assert kinds(raised) == ["meter_changed"]
    assert raised[0].started_at == change.ts
    assert "replaced" in raised[0].message
    assert [e.kind for e in evaluate(at + timedelta(hours=1)).raised] == ["stale"]
    outcome = evaluate(change.ts + timedelta(hours=25))
    assert "meter_changed" in kinds(outcome.cleared)
    assert "meter_changed" not in kinds(evaluate(change.ts + timedelta(hours=26)).raised), (
        "the same break is never announced again"
    )


def test_an_edge_uploading_old_readings_raises_backlog_not_stale_and_clears_when_caught_up(
    device, ingest_token
):
    token = DeviceToken.objects.get(device=device)
    now = now_s()
    # The edge was offline and now uploads its spool, oldest first: 40 minutes behind.
    store(device, readings(now - timedelta(minutes=50), 10), token.pk)
    outcome = evaluate(now + timedelta(seconds=5))
    assert kinds(outcome.raised) == ["edge_backlog"]
    assert outcome.raised[0].details["lag_s"] >= 40 * 60 - 60
    assert "spool is backing up" in outcome.raised[0].message

    store(device, readings(now - timedelta(minutes=40), 40), token.pk)  # caught up
    outcome = evaluate(now + timedelta(seconds=10))
    assert kinds(outcome.cleared) == ["edge_backlog"] and outcome.raised == []


def test_without_an_enabled_peak_guard_alerts_are_kept_but_no_webhook_message_is_written(device):
    last = now_s() - timedelta(minutes=20)
    store(device, readings(last, 1))
    assert kinds(evaluate(last + timedelta(minutes=20)).raised) == ["stale"]
    assert not HealthNotice.objects.exists()


def test_the_command_evaluates_now_and_delivers(guarded, receiver):
    store(guarded, readings(now_s() - timedelta(minutes=30), 5))
    call_command("run_health_alerts", "--once")
    (hook,) = receiver.wait_for(1)
    assert (hook.json["kind"], hook.json["event"]) == ("stale", "raised")
    notice = HealthNotice.objects.get()
    assert notice.state == "delivered"
    assert json.loads(hook.body)["details"]["stale_after_s"] == 15 * 60


def test_staff_see_episodes_read_only_in_the_admin(client, staff, device):
    last = now_s() - timedelta(minutes=20)
    store(device, readings(last, 1))
    (episode,) = evaluate(last + timedelta(minutes=20)).raised
    staff.user_permissions.add(Permission.objects.get(codename="view_healthepisode"))
    client.force_login(staff)
    listing = client.get("/admin/integrations/healthepisode/")
    assert listing.status_code == 200 and "home-p1" in listing.content.decode()
    assert client.get("/admin/integrations/healthepisode/add/").status_code == 403
    page = client.get(f"/admin/integrations/healthepisode/{episode.pk}/change/")
    assert page.status_code == 200 and "No reading from" in page.content.decode()
