"""The Django admin issues tokens (shown once) and revokes them."""

from __future__ import annotations

import pytest

from telemetry.models import DeviceToken
from telemetry.tokens import hash_token, issue_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("admin", password="admin-pw-123")
    client.force_login(admin)
    return client


def test_admin_issues_a_token_and_shows_it_once(admin_client, device):
    response = admin_client.post(
        "/admin/telemetry/devicetoken/add/",
        {"device": device.pk, "label": "attic pi", "scope_choices": ["ingest", "read"]},
        follow=True,
    )
    assert response.status_code == 200
    token = DeviceToken.objects.get(device=device)
    shown = [str(m) for m in response.context["messages"]]
    (message,) = [m for m in shown if "copy it now" in m]
    raw = message.split(": ", 1)[1].split(" ")[0]
    assert hash_token(raw) == token.token_hash
    assert token.scopes == "ingest,read"
    # The change page afterwards never shows the token again.
    page = admin_client.get(f"/admin/telemetry/devicetoken/{token.pk}/change/").content.decode()
    assert raw not in page


def test_admin_revokes_selected_tokens(admin_client, device):
    token, _ = issue_token(device, "ingest")
    response = admin_client.post(
        "/admin/telemetry/devicetoken/",
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    assert response.status_code == 200
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_admin_lists_devices_with_their_tokens(admin_client, device):
    issue_token(device, "read")
    page = admin_client.get(f"/admin/telemetry/device/{device.pk}/change/")
    assert page.status_code == 200
    assert b"read" in page.content
