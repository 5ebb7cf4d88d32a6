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
from telemetry.tokens import issue_token
from tests.conftest import bearer
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
    # The meter reported until 50 minutes ago; then the edge's uplink went down.
    store(device, readings(now - timedelta(minutes=60), 10), token.pk)
    assert kinds(evaluate(now - timedelta(minutes=1)).raised) == ["stale"]
    # The uplink is back: the edge uploads its spool, oldest first, 40 minutes behind.
    store(device, readings(now - timedelta(minutes=50), 10), token.pk)
    outcome = evaluate(now)
    assert kinds(outcome.raised) == ["edge_backlog"] and kinds(outcome.cleared) == ["stale"]
    assert outcome.raised[0].details["lag_s"] >= 39 * 60
    assert "spool is backing up" in outcome.raised[0].message

    store(device, readings(now - timedelta(minutes=40), 20), token.pk)  # 20 minutes behind
    outcome = evaluate(now + timedelta(minutes=1))
    assert (outcome.raised, outcome.cleared) == ([], []), "still the same backlog"

    store(device, readings(now - timedelta(minutes=20), 21), token.pk)  # caught up
    outcome = evaluate(now + timedelta(minutes=2))
    assert kinds(outcome.cleared) == ["edge_backlog"] and outcome.raised == []


def test_a_dead_meter_stays_stale_while_its_token_is_used_without_storing_anything(client, device):
    # The token serve.sh issues (ingest,read), also read by a Home Assistant REST sensor.
    _token, raw = issue_token(device, "ingest,read")
    start = now_s() - timedelta(hours=2)
    store(device, readings(start, 2))
    newest = start + timedelta(minutes=2) - timedelta(seconds=10)
    assert kinds(evaluate(newest + timedelta(minutes=20)).raised) == ["stale"]

    # The token is used: a read, and a batch the server refuses (nothing stored).
    assert client.get("/v1/realtime", headers=bearer(raw)).status_code == 200
    refused = client.post(
        "/v1/ingest",
        data=json.dumps({"samples": [{**sample(now_s()), "power_w": "lots"}]}),
        content_type="application/json",
        headers=bearer(raw),
    )
    assert refused.status_code == 422
    assert DeviceToken.objects.get(pk=_token.pk).last_used_at is not None
    for later in (timedelta(seconds=30), timedelta(minutes=10), timedelta(minutes=40)):
        outcome = evaluate(timezone.now() + later)
        assert (outcome.raised, outcome.cleared) == ([], [])
    assert list(HealthEpisode.objects.filter(device=device).values_list("kind", "cleared_at")) == [
        ("stale", None)
    ]


def test_a_stale_episode_may_open_again_with_the_same_start_but_a_register_break_may_not(
    device,
):
    started = now_s()
    cleared = started + timedelta(minutes=5)
    for kind in ("stale", "meter_changed"):
        HealthEpisode.objects.create(
            device=device, kind=kind, started_at=started, cleared_at=cleared, message="m"
        )
    HealthEpisode.objects.create(device=device, kind="stale", started_at=started, message="m")
    with pytest.raises(IntegrityError), transaction.atomic():
        HealthEpisode.objects.create(
            device=device, kind="meter_changed", started_at=started, message="m"
        )


def test_no_stale_alert_within_the_grace_after_the_evaluator_starts(device):
    # The server (and this evaluator) were down; the meter looks silent until its edge
    # has uploaded.
    started = now_s()
    store(device, readings(started - timedelta(minutes=40), 1))
    assert evaluate(started, grace_from=started).raised == []
    assert evaluate(started + timedelta(minutes=14), grace_from=started).raised == []
    late = evaluate(started + timedelta(minutes=15), grace_from=started)
    assert kinds(late.raised) == ["stale"], "the grace is HEALTH_STALE_AFTER_MIN"


def test_an_open_stale_alert_is_neither_raised_again_nor_cleared_by_the_grace(device):
    now = now_s()
    store(device, readings(now - timedelta(minutes=40), 1))
    assert kinds(evaluate(now).raised) == ["stale"]
    outcome = evaluate(now + timedelta(minutes=1), grace_from=now + timedelta(minutes=1))
    assert (outcome.raised, outcome.cleared) == ([], [])
    assert HealthEpisode.objects.get().is_open


def test_when_no_device_has_reported_recently_stale_alerts_wait_for_the_devices(
    device, other_device
):
    now = now_s()
    for each in (device, other_device):
        store(each, readings(now - timedelta(minutes=40), 1))
    silent = evaluate(now)
    assert silent.fleet_silent and silent.raised == [], "the server's problem, not the meters'"
    # One edge is back; the other meter really is silent.
    store(device, readings(now - timedelta(minutes=39), 40))
    back = evaluate(now + timedelta(minutes=1))
    assert not back.fleet_silent
    assert [(e.device_id, e.kind) for e in back.raised] == [(other_device.pk, "stale")]


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
