"""Guards are checked when saved in the admin; alerts are read-only there; the separate
delivery command sends what the web processes left; claims are exclusive."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.utils import timezone

from peakguard import delivery
from peakguard.models import PeakAlert, PeakGuard
from tests.conftest import bearer
from tests.peakguard.conftest import NOW, QUARTER_START, make_guard
from tests.peakguard.receivers import Receiver


@pytest.fixture
def admin_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.org", "root-pw-1")
    client.force_login(admin)
    return client


def add_guard(admin_client, device, url: str):
    return admin_client.post(
        "/admin/peakguard/peakguard/add/",
        {"device": device.pk, "webhook_url": url, "threshold_kw": "", "enabled": "on"},
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://192.168.1.5/hook", "192.168.1.5 is a private address"),
        ("https://localhost:8443/hook", "localhost: 127.0.0.1 is a loopback address"),
        ("http://93.184.215.14/hook", "plain http:// is not allowed; use https://"),
        ("https://169.254.169.254/", "169.254.169.254 is a cloud metadata address"),
    ],
)
def test_admin_refuses_a_webhook_the_server_must_not_call(admin_client, device, url, message):
    response = add_guard(admin_client, device, url)
    assert response.status_code == 200
    assert f"This address cannot be used: {message}" in response.content.decode()
    assert not PeakGuard.objects.exists()


@pytest.mark.django_db
def test_admin_saves_a_public_https_webhook(admin_client, device):
    response = add_guard(admin_client, device, "https://93.184.215.14/hooks/p1")
    assert response.status_code == 302, response.content.decode()[:2000]
    assert PeakGuard.objects.get().threshold_kw is None


@pytest.mark.django_db
def test_device_page_edits_its_peak_guard(admin_client, device):
    page = admin_client.get(f"/admin/telemetry/device/{device.pk}/change/")
    assert b"peak_guard-TOTAL_FORMS" in page.content
    form = {
        "device_id": device.device_id,
        "name": device.name,
        "owner": device.owner_id,
        "timezone": device.timezone,
        "tokens-TOTAL_FORMS": "0",
        "tokens-INITIAL_FORMS": "0",
        "peak_guard-TOTAL_FORMS": "1",
        "peak_guard-INITIAL_FORMS": "0",
        "peak_guard-0-webhook_url": "https://93.184.215.14/hook",
        "peak_guard-0-threshold_kw": "4.5",
        "peak_guard-0-enabled": "on",
    }
    refused = admin_client.post(
        f"/admin/telemetry/device/{device.pk}/change/",
        {**form, "peak_guard-0-webhook_url": "https://10.0.0.7/hook"},
    )
    assert b"10.0.0.7 is a private address" in refused.content
    assert not PeakGuard.objects.exists()

    saved = admin_client.post(f"/admin/telemetry/device/{device.pk}/change/", form)
    assert saved.status_code == 302, saved.content.decode()[-2000:]
    guard = PeakGuard.objects.get(device=device)
    assert guard.threshold_kw == 4.5 and guard.enabled


@pytest.mark.django_db
def test_alerts_cannot_be_added_or_edited_in_the_admin(admin_client, device):
    alert = PeakAlert.objects.create(
        device=device,
        quarter_start=QUARTER_START,
        quarter_end=QUARTER_START,
        average_so_far_kw=3.0,
        projected_kw=4.0,
        threshold_kw=3.5,
    )
    assert admin_client.get("/admin/peakguard/peakalert/add/").status_code == 403
    page = admin_client.get(f"/admin/peakguard/peakalert/{alert.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()


@pytest.mark.django_db
def test_a_due_alert_is_claimed_by_one_caller_only(device):
    PeakAlert.objects.create(
        device=device,
        quarter_start=QUARTER_START,
        quarter_end=QUARTER_START,
        average_so_far_kw=3.0,
        projected_kw=4.0,
        threshold_kw=3.5,
    )
    now = timezone.now()
    assert len(delivery.claim_due(now)) == 1
    assert delivery.claim_due(now) == []
    assert len(delivery.claim_due(now + delivery.LEASE * 2)) == 1, "an expired lease is free"


@pytest.mark.parametrize("delays", [["0", "soon"], ["0", "-5"], ["inf"], []])
def test_bad_retry_delays_name_the_variable(settings, delays):
    settings.PEAKGUARD_RETRY_DELAYS_S = delays
    with pytest.raises(ImproperlyConfigured, match="PEAKGUARD_RETRY_DELAYS_S"):
        delivery.retry_delays()


@pytest.mark.usefixtures("webhooks", "clock")
def test_command_delivers_when_the_web_processes_do_not(
    client, device, ingest_token, meter, settings
):
    settings.PEAKGUARD_IN_PROCESS_DELIVERY = False
    with Receiver() as receiver:
        make_guard(device, receiver.url, threshold_kw=2.0)
        response = client.post(
            "/v1/ingest",
            {"samples": meter.run(QUARTER_START, NOW, 3000)},
            content_type="application/json",
            headers=bearer(ingest_token),
        )
        assert response.status_code == 200
        (alert,) = PeakAlert.objects.all()
        assert alert.attempts == 0
        assert not delivery.worker._running()
        call_command("deliver_peak_alerts", "--once")
    (request,) = receiver.received
    assert request.json["quarter_start"] == "2026-03-10T15:30:00+01:00"
    alert.refresh_from_db()
    assert alert.delivered_at is not None
