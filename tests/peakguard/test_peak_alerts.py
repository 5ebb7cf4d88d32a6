"""A guarded device's webhook hears once per quarter whose projection crosses the
threshold, through the real ingest path; delivery retries, gives up, and never holds
up an ingest answer."""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import threading
from datetime import timedelta

import pytest

from peakguard.delivery import SIGNATURE_HEADER
from peakguard.models import PeakAlert
from tests.conftest import bearer
from tests.peakguard.conftest import NOW, QUARTER_START, make_guard
from tests.peakguard.receivers import Receiver
from tests.waiting import wait_until

pytestmark = pytest.mark.usefixtures("webhooks", "clock")

MINUTE = timedelta(minutes=1)


def ingest(client, token, samples) -> dict:
    response = client.post(
        "/v1/ingest", {"samples": samples}, content_type="application/json", headers=bearer(token)
    )
    assert response.status_code == 200, response.content
    return response.json()


def alert_state(device):
    return list(PeakAlert.objects.filter(device=device).order_by("quarter_start"))


def delivered(device, count: int = 1) -> list[PeakAlert]:
    return wait_until(
        lambda: (
            rows
            if len(rows := [a for a in alert_state(device) if a.delivered_at]) >= count
            else None
        ),
        what=f"{count} delivered alerts",
    )


def test_crossing_sends_one_post_per_quarter_despite_more_and_retried_batches(
    client, device, ingest_token, meter, clock
):
    make_guard(device, "", threshold_kw=3.0)
    with Receiver() as receiver:
        device.peak_guard.webhook_url = receiver.url
        device.peak_guard.save()
        early = meter.run(QUARTER_START, QUARTER_START + 2 * MINUTE, 1000)
        ingest(client, ingest_token, early)
        assert alert_state(device) == []
        crossing = meter.run(
            QUARTER_START + 2 * MINUTE + 10 * timedelta(seconds=1), NOW - 5 * MINUTE, 6000
        )
        ingest(client, ingest_token, crossing)
        ingest(client, ingest_token, crossing)  # the edge retried: duplicates only
        ingest(
            client, ingest_token, meter.run(NOW - 5 * MINUTE + 10 * timedelta(seconds=1), NOW, 7000)
        )
        # 10 minutes in, 0.92 kWh is already beyond 3 kW x 15 min: projected and broken.
        first, broken = sorted(receiver.wait_for(2), key=lambda r: r.json["kind"] != "projected")
        # The next quarter crosses too (and breaks, 1 kWh in 10 minutes): its own POSTs.
        clock(NOW + 15 * MINUTE)
        next_quarter = meter.run(
            NOW + 5 * MINUTE + 10 * timedelta(seconds=1), NOW + 15 * MINUTE, 6000
        )
        ingest(client, ingest_token, next_quarter[:30])
        ingest(client, ingest_token, next_quarter[30:])
        delivered(device, 4)
        requests = receiver.wait_for(4)
    assert len(requests) == 4
    body = first.json
    assert body["device"] == "home-p1"
    assert body["device_name"] == "Home"
    assert body["quarter_start"] == "2026-03-10T15:30:00+01:00"
    assert body["quarter_end"] == "2026-03-10T15:45:00+01:00"
    assert body["threshold_kw"] == 3.0
    assert body["projected_kw"] > 3.0
    assert 0 < body["average_so_far_kw"] < body["projected_kw"]
    assert set(body) == {
        "device", "device_name", "quarter_start", "quarter_end", "average_so_far_kw",
        "projected_kw", "threshold_kw", "month_peak_kw", "sent_at", "kind", "target_kw",
    }  # fmt: skip
    assert (body["kind"], broken.json["kind"]) == ("projected", "broken")
    assert broken.json["quarter_start"] == body["quarter_start"]
    assert "P1 Platform" in first.headers["User-Agent"]
    assert {(r.json["quarter_start"], r.json["kind"]) for r in requests[2:]} == {
        ("2026-03-10T15:45:00+01:00", "projected"),
        ("2026-03-10T15:45:00+01:00", "broken"),
    }
    assert [a.attempts for a in alert_state(device)] == [1, 1, 1, 1]


def test_projection_below_threshold_sends_nothing(client, device, ingest_token, meter):
    with Receiver() as receiver:
        make_guard(device, receiver.url, threshold_kw=5.0)
        ingest(client, ingest_token, meter.run(QUARTER_START, NOW, 4900))
    # The check runs before the ingest answer is returned: no row means nothing to send.
    assert alert_state(device) == []
    assert receiver.received == []


def test_default_threshold_is_the_months_peak_so_far(client, device, ingest_token, meter):
    earlier = QUARTER_START - 30 * MINUTE
    with Receiver() as receiver:
        make_guard(device, receiver.url)
        ingest(client, ingest_token, meter.run(earlier, earlier + 15 * MINUTE, 4000))
        ingest(
            client,
            ingest_token,
            meter.run(earlier + 15 * MINUTE + 10 * timedelta(seconds=1), QUARTER_START, 1000),
        )
        ingest(
            client,
            ingest_token,
            meter.run(QUARTER_START + 10 * timedelta(seconds=1), NOW - 5 * MINUTE, 3800),
        )
        assert alert_state(device) == [], "3.8 kW does not beat this month's 4 kW peak"
        ingest(
            client, ingest_token, meter.run(NOW - 5 * MINUTE + 10 * timedelta(seconds=1), NOW, 8000)
        )
        (request,) = receiver.wait_for(1)
    body = request.json
    assert body["month_peak_kw"] == pytest.approx(4.0, abs=0.05)
    assert body["threshold_kw"] == body["month_peak_kw"]
    assert body["projected_kw"] > 4.0


def test_without_a_peak_this_month_the_default_threshold_is_the_billed_minimum(
    client, device, ingest_token, meter
):
    with Receiver() as receiver:
        make_guard(device, receiver.url)
        ingest(client, ingest_token, meter.run(QUARTER_START, NOW - 5 * MINUTE, 2200))
        assert alert_state(device) == [], "below 2.5 kW a quarter never raises the bill"
        ingest(
            client, ingest_token, meter.run(NOW - 5 * MINUTE + 10 * timedelta(seconds=1), NOW, 5000)
        )
        (request,) = receiver.wait_for(1)
    assert request.json["threshold_kw"] == 2.5
    assert request.json["month_peak_kw"] is None


def test_late_backlog_of_a_past_quarter_fires_nothing(client, device, ingest_token, meter):
    with Receiver() as receiver:
        make_guard(device, receiver.url, threshold_kw=1.0)
        backlog = meter.run(QUARTER_START - 60 * MINUTE, QUARTER_START - 1 * MINUTE, 9000)
        answer = ingest(client, ingest_token, backlog)
    assert answer["inserted"] == len(backlog)
    assert alert_state(device) == []
    assert receiver.received == []


def test_receiver_failing_twice_gets_it_on_the_third_attempt(
    client, device, ingest_token, meter, caplog
):
    caplog.set_level(logging.WARNING, logger="peakguard")
    with Receiver([500, 503]) as receiver:
        make_guard(device, receiver.url, threshold_kw=2.0)
        ingest(client, ingest_token, meter.run(QUARTER_START, NOW, 3000))
        (alert,) = delivered(device)
        assert len(receiver.wait_for(3)) == 3
    assert alert.attempts == 3
    assert alert.gave_up_at is None
    failures = [r.getMessage() for r in caplog.records if r.name == "peakguard"]
    assert any("attempt 1 of 3 failed" in m and "answered 500" in m for m in failures)
    assert any("attempt 2 of 3 failed" in m and "answered 503" in m for m in failures)


def test_receiver_down_for_good_exhausts_attempts_and_ingest_stays_fine(
    client, device, ingest_token, meter, caplog
):
    caplog.set_level(logging.WARNING, logger="peakguard")
    with Receiver([500] * 10) as receiver:
        make_guard(device, receiver.url, threshold_kw=2.0)
        ingest(client, ingest_token, meter.run(QUARTER_START, NOW - 5 * MINUTE, 3000))
        (alert,) = wait_until(
            lambda: [a for a in alert_state(device) if a.gave_up_at], what="alert given up"
        )
        ingest(client, ingest_token, meter.run(NOW - 4 * MINUTE, NOW, 3000))
    assert alert.attempts == 3
    assert alert.delivered_at is None
    assert "answered 500" in alert.last_error
    assert len(receiver.received) == 3
    assert any("attempt 3 of 3 failed, giving up" in r.getMessage() for r in caplog.records)


def test_nothing_listening_counts_as_a_failed_attempt_too(client, device, ingest_token, meter):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    make_guard(device, f"http://127.0.0.1:{port}/hook", threshold_kw=2.0)
    ingest(client, ingest_token, meter.run(QUARTER_START, NOW, 3000))
    (alert,) = wait_until(lambda: [a for a in alert_state(device) if a.gave_up_at])
    assert alert.attempts == 3
    assert "ConnectError" in alert.last_error


def test_ingest_answers_before_the_delivery_finishes(client, device, ingest_token, meter):
    gate = threading.Event()
    with Receiver(gate=gate) as receiver:
        make_guard(device, receiver.url, threshold_kw=2.0)
        ingest(client, ingest_token, meter.run(QUARTER_START, NOW - 5 * MINUTE, 3000))
        receiver.wait_for(1)  # the webhook holds the request open...
        ingest(client, ingest_token, meter.run(NOW - 4 * MINUTE, NOW, 3000))  # ...ingest goes on
        assert alert_state(device)[0].delivered_at is None
        gate.set()
        (alert,) = delivered(device)
    assert alert.attempts == 1


def test_body_is_signed_when_a_secret_is_set(client, device, ingest_token, meter, settings):
    settings.PEAKGUARD_WEBHOOK_SECRET = "shared-secret-for-the-receiver"
    with Receiver() as receiver:
        make_guard(device, receiver.url, threshold_kw=2.0)
        ingest(client, ingest_token, meter.run(QUARTER_START, NOW, 3000))
        (request,) = receiver.wait_for(1)
    expected = hmac.new(b"shared-secret-for-the-receiver", request.body, hashlib.sha256)
    assert request.headers[SIGNATURE_HEADER] == "sha256=" + expected.hexdigest()


def test_refused_target_is_given_up_at_once(client, device, ingest_token, meter, settings):
    settings.PEAKGUARD_ALLOW_PRIVATE_TARGETS = False
    make_guard(device, "https://10.20.30.40/hook", threshold_kw=2.0)
    ingest(client, ingest_token, meter.run(QUARTER_START, NOW, 3000))
    (alert,) = wait_until(lambda: [a for a in alert_state(device) if a.gave_up_at])
    assert alert.attempts == 1
    assert alert.last_error.startswith("refused: 10.20.30.40 is a private address")


def test_disabled_guard_raises_nothing(client, device, ingest_token, meter):
    guard = make_guard(device, "https://93.184.215.14/hook", threshold_kw=1.0)
    guard.enabled = False
    guard.save()
    ingest(client, ingest_token, meter.run(QUARTER_START, NOW, 3000))
    assert alert_state(device) == []


def test_device_without_guard_is_untouched(client, device, ingest_token, meter):
    ingest(client, ingest_token, meter.run(QUARTER_START, NOW, 9000))
    assert alert_state(device) == []
