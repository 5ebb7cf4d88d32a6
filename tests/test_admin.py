"""The Django admin: tokens (issued once, revoked), devices (owner, latest samples,
quarantine), all within the site's Content-Security-Policy."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from telemetry.models import Device, DeviceToken, IngestRejection
from telemetry.pipeline import ingest_batch
from telemetry.tokens import hash_token, issue_token
from telemetry.validation import validate_samples
from tests.samples import BASE_TS, series

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\b(?:src=|type=\"application/json\"))[^>]*>")


@pytest.fixture
def admin_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("admin", password="admin-pw-123")
    client.force_login(admin)
    return client


def store(device, samples) -> None:
    columns, errors = validate_samples(samples, now=BASE_TS + timedelta(days=365))
    assert not errors
    ingest_batch(device, columns)


def issue_through_admin(admin_client, device, scopes):
    return admin_client.post(
        "/admin/telemetry/devicetoken/add/",
        {"device": device.pk, "label": "attic pi", "scope_choices": scopes},
    )


def visible(page: str) -> str:
    """The page's text without its tags (times are two spans: date and time)."""
    return re.sub(r"<[^>]+>", "", page)


def shown_token(page: str) -> str:
    (raw,) = re.findall(r'id="issued-token"[^>]*value="([^"]+)"', page)
    return raw


def test_admin_issues_a_token_and_shows_it_once(admin_client, device):
    response = issue_through_admin(admin_client, device, ["ingest", "read"])
    assert response.status_code == 200
    page = response.content.decode()
    token = DeviceToken.objects.get(device=device)
    raw = shown_token(page)
    assert hash_token(raw) == token.token_hash
    assert token.scopes == "ingest,read"
    assert "no-store" in response["Cache-Control"]
    # Never in a message (cookie or session) nor on any later page.
    assert not list(response.context["messages"])
    for url in (
        f"/admin/telemetry/devicetoken/{token.pk}/change/",
        "/admin/telemetry/devicetoken/",
        f"/admin/telemetry/device/{device.pk}/change/",
    ):
        assert raw not in admin_client.get(url).content.decode()


def test_issued_token_page_copies_with_a_static_script(admin_client, device):
    page = issue_through_admin(admin_client, device, ["ingest"]).content.decode()
    assert 'data-copy-target="issued-token"' in page
    assert "telemetry/admin/copy_token.js" in page
    assert not INLINE_SCRIPT.search(page)
    assert " style=" not in page
    script = admin_client.get("/static/telemetry/admin/copy_token.js")
    assert script.status_code == 200


def test_issue_needs_at_least_one_scope(admin_client, device):
    response = issue_through_admin(admin_client, device, [])
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["scope_choices"]
    assert not DeviceToken.objects.exists()


def test_issue_form_is_prefilled_from_the_device_page(admin_client, device):
    page = admin_client.get(f"/admin/telemetry/device/{device.pk}/change/").content.decode()
    assert f"/admin/telemetry/devicetoken/add/?device={device.pk}" in page
    form = admin_client.get(f"/admin/telemetry/devicetoken/add/?device={device.pk}")
    assert form.context["adminform"].form.initial["device"] == str(device.pk)


def test_admin_revokes_selected_tokens(admin_client, device):
    token, _ = issue_token(device, "ingest")
    kept, _ = issue_token(device, "read")
    response = admin_client.post(
        "/admin/telemetry/devicetoken/",
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    assert response.status_code == 200
    token.refresh_from_db()
    kept.refresh_from_db()
    assert token.revoked_at is not None
    assert kept.revoked_at is None


def test_token_list_shows_scopes_and_last_use(admin_client, device):
    token, _ = issue_token(device, "read", label="grafana")
    DeviceToken.objects.filter(pk=token.pk).update(last_used_at=BASE_TS)
    page = visible(admin_client.get("/admin/telemetry/devicetoken/").content.decode())
    assert "grafana" in page
    assert "read" in page
    # Last used: 00:00 UTC is 01:00 on the device's clock (Europe/Brussels, winter time).
    assert "2026-03-01 01:00 CET" in page


def test_tokens_are_revoked_never_deleted(admin_client, device):
    token, _ = issue_token(device, "ingest")
    response = admin_client.post(
        f"/admin/telemetry/devicetoken/{token.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 403
    assert DeviceToken.objects.filter(pk=token.pk).exists()


def test_device_list_shows_owner_and_last_sample_time(admin_client, device, other_device):
    store(device, series(3))
    page = visible(admin_client.get("/admin/telemetry/device/").content.decode())
    assert "owner" in page
    assert "neighbour" in page
    # The newest of the three samples, 00:00:02 UTC on 1 March, on the device's clock.
    assert "2026-03-01 01:00:02 CET" in page


def test_device_list_costs_a_fixed_number_of_queries(
    admin_client, device, other_device, django_assert_max_num_queries
):
    store(device, series(3))
    for i in range(5):
        Device.objects.create(device_id=f"extra-{i}")
    with django_assert_max_num_queries(8):
        admin_client.get("/admin/telemetry/device/")


def test_admin_assigns_an_owner(admin_client, device, django_user_model):
    new_owner = django_user_model.objects.create_user("tenant", password="tenant-pw-123")
    response = admin_client.post(
        f"/admin/telemetry/device/{device.pk}/change/",
        {
            "device_id": device.device_id,
            "name": device.name,
            "owner": new_owner.pk,
            "timezone": device.timezone,
            "capacity_price_eur_per_kw_year": "",
            "tokens-TOTAL_FORMS": "0",
            "tokens-INITIAL_FORMS": "0",
            # The peak guard inline (peakguard/admin.py), left empty.
            "peak_guard-TOTAL_FORMS": "0",
            "peak_guard-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    device.refresh_from_db()
    assert device.owner == new_owner


def test_owner_field_searches_users(admin_client, device):
    response = admin_client.get(
        "/admin/autocomplete/",
        {"term": "own", "app_label": "telemetry", "model_name": "device", "field_name": "owner"},
    )
    assert response.status_code == 200
    assert [r["text"] for r in response.json()["results"]] == ["owner"]


def test_device_page_shows_the_latest_50_samples_newest_first(admin_client, device):
    store(device, series(60))
    page = admin_client.get(f"/admin/telemetry/device/{device.pk}/change/").content.decode()
    table = page.split('class="telemetry-latest-samples"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td>([^<]+)</td>", table)
    assert len(rows) == 50
    assert rows[0] == "2026-03-01 01:00:59 CET"
    assert rows[-1] == "2026-03-01 01:00:10 CET"
    # Read-only: no inputs for samples anywhere on the page.
    assert 'name="sample' not in page
    assert not INLINE_SCRIPT.search(page)


def test_latest_samples_are_read_with_one_indexed_query(admin_client, device):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    store(device, series(5))
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(f"/admin/telemetry/device/{device.pk}/change/")
    sample_queries = [q["sql"] for q in queries if '"telemetry_sample"' in q["sql"]]
    table = [q for q in sample_queries if "LIMIT 50" in q]
    assert len(table) == 1
    # Newest first within one device: a backward scan of the (device, ts) key.
    assert f'WHERE "telemetry_sample"."device_id" = {device.pk} ORDER BY' in table[0]
    assert table[0].endswith("DESC LIMIT 50")


def test_admin_times_are_on_the_devices_clock_with_its_zone(admin_client, device):
    device.timezone = "America/New_York"
    device.save()
    summer = BASE_TS.replace(month=7)
    store(device, series(2, start=summer))
    token, _ = issue_token(device, "read", label="grafana")
    DeviceToken.objects.filter(pk=token.pk).update(created_at=summer, last_used_at=summer)
    devices = visible(admin_client.get("/admin/telemetry/device/").content.decode())
    assert "2026-06-30 20:00:01 EDT" in devices  # 00:00:01 UTC on 1 July
    page = admin_client.get(f"/admin/telemetry/device/{device.pk}/change/").content.decode()
    assert "times in America/New_York" in page
    assert "<td>2026-06-30 20:00:01 EDT</td>" in page  # the latest samples
    page = visible(page)
    assert page.count("2026-06-30 20:00 EDT") == 2  # the token inline: created, used
    tokens = visible(admin_client.get("/admin/telemetry/devicetoken/").content.decode())
    assert tokens.count("2026-06-30 20:00 EDT") == 1  # used
    assert "+00:00" not in devices + page + tokens


def test_a_device_with_many_samples_opens_its_page_with_the_same_queries(
    admin_client, device, other_device
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    store(other_device, series(3))
    store(device, series(20_000))

    def change_page(d):
        with CaptureQueriesContext(connection) as queries:
            response = admin_client.get(f"/admin/telemetry/device/{d.pk}/change/")
        assert response.status_code == 200
        return response.content.decode(), len(queries)

    _few_page, few = change_page(other_device)
    many_page, many = change_page(device)
    assert many == few  # nothing per sample: the table is one query with LIMIT 50
    table = many_page.split('class="telemetry-latest-samples"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr><td>") == 50


def test_device_page_shows_the_quarantine(admin_client, device):
    IngestRejection.objects.create(
        device=device, index=3, reason="power_w must be a number", sample='{"power_w": "x"}'
    )
    page = admin_client.get(f"/admin/telemetry/device/{device.pk}/change/").content.decode()
    assert "power_w must be a number" in page
    assert "{&quot;power_w&quot;: &quot;x&quot;}" in page  # escaped, never raw HTML


def test_rejections_are_read_only_in_the_admin(admin_client, device):
    rejection = IngestRejection.objects.create(device=device, index=0, reason="ts is required")
    assert admin_client.get("/admin/telemetry/ingestrejection/add/").status_code == 403
    page = admin_client.get(f"/admin/telemetry/ingestrejection/{rejection.pk}/change/")
    assert page.status_code == 200
    assert b'name="reason"' not in page.content
    listing = admin_client.get(f"/admin/telemetry/ingestrejection/?device__id__exact={device.pk}")
    assert b"ts is required" in listing.content
