"""The household's target peak and the "peak certainly broken" state: both reach the
webhook (through the real ingest path) and the realtime answer the dashboard reads."""

from __future__ import annotations

from datetime import timedelta

import pytest

from capacity import rules
from peakguard.models import PeakAlert, PeakGuard
from tests.conftest import bearer
from tests.peakguard.conftest import NOW, QUARTER_START, make_guard
from tests.peakguard.receivers import Receiver
from tests.peakguard.test_peak_alerts import alert_state, ingest

pytestmark = pytest.mark.usefixtures("webhooks", "clock")

MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)


def test_broken_only_once_the_energy_so_far_exceeds_a_quarter_at_the_threshold():
    assert not rules.certainly_above(0.75, 3.0)  # exactly 3 kW x 15 min: not above
    assert rules.certainly_above(0.7501, 3.0)
    outlook = rules.quarter_outlook(0.5, 300, 0.0, 1.9)  # 0.5 kWh in 5 min, nothing now
    assert outlook.threshold_kw == 2.5 and outlook.certainly_exceeds is False
    assert rules.quarter_outlook(0.7, 300, 0.0, 2.5).certainly_exceeds is True


def test_a_target_below_the_months_peak_warns_against_the_target(
    client, device, ingest_token, meter
):
    earlier = QUARTER_START - 30 * MINUTE
    with Receiver() as receiver:
        make_guard(device, receiver.url)
        PeakGuard.objects.filter(device=device).update(target_kw=3.0)
        ingest(client, ingest_token, meter.run(earlier, earlier + 15 * MINUTE, 5000))
        ingest(
            client, ingest_token, meter.run(earlier + 15 * MINUTE + 10 * SECOND, QUARTER_START, 500)
        )
        # 3.5 kW stays below this month's 5 kW peak but above the household's 3 kW goal.
        ingest(client, ingest_token, meter.run(QUARTER_START + 10 * SECOND, NOW - 8 * MINUTE, 3500))
        (request,) = receiver.wait_for(1)
    body = request.json
    assert (body["kind"], body["threshold_kw"], body["target_kw"]) == ("projected", 3.0, 3.0)
    assert body["month_peak_kw"] == pytest.approx(5.0, abs=0.05)
    assert [a.kind for a in alert_state(device)] == ["projected"]


def test_the_peak_certainly_broken_reaches_the_webhook_once(client, device, ingest_token, meter):
    with Receiver() as receiver:
        make_guard(device, receiver.url, threshold_kw=3.0)
        # 4 minutes at 6 kW: projected above 3 kW, but 0.4 kWh could still end at 1.6 kW.
        ingest(client, ingest_token, meter.run(QUARTER_START, QUARTER_START + 4 * MINUTE, 6000))
        assert [a.kind for a in alert_state(device)] == ["projected"]
        # 8 minutes: 0.8 kWh is beyond 3 kW x 15 min whatever the load does now.
        later = meter.run(
            QUARTER_START + 4 * MINUTE + 10 * SECOND, QUARTER_START + 8 * MINUTE, 6000
        )
        ingest(client, ingest_token, later)
        ingest(client, ingest_token, later)  # a retried batch raises nothing more
        requests = receiver.wait_for(2)
    assert sorted(r.json["kind"] for r in requests) == ["broken", "projected"]
    assert PeakAlert.objects.filter(device=device).count() == 2


def test_the_realtime_answer_says_when_the_peak_is_certainly_broken(
    client, device, ingest_token, read_token, meter
):
    ingest(client, ingest_token, meter.run(QUARTER_START, QUARTER_START + 4 * MINUTE, 6000))
    quarter = client.get(
        "/v1/realtime", {"device_id": device.device_id}, headers=bearer(read_token)
    ).json()["quarter"]
    assert quarter["certainly_exceeds_threshold"] is False  # 0.4 kWh x 4 < 2.5 kW
    assert quarter["energy_so_far_kwh"] == pytest.approx(0.4, abs=0.01)
    ingest(
        client,
        ingest_token,
        meter.run(QUARTER_START + 4 * MINUTE + 10 * SECOND, QUARTER_START + 7 * MINUTE, 6000),
    )
    quarter = client.get(
        "/v1/realtime", {"device_id": device.device_id}, headers=bearer(read_token)
    ).json()["quarter"]
    assert quarter["certainly_exceeds_threshold"] is True  # 0.7 kWh x 4 > 2.5 kW
