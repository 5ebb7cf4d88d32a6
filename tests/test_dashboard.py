"""Dashboard pages: who sees which device, login and logout, the CSP header, the
settings the page's script reads, and the vendored chart library's integrity."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dashboard import csp, pages
from scripts import fetch_vendor

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staff", password="staff-pw-123", is_staff=True)


def page_config(response) -> dict:
    match = re.search(
        r'<script id="dashboard-config" type="application/json">(.*?)</script>',
        response.content.decode(),
    )
    assert match, "the page carries its settings in a json_script block"
    return json.loads(match.group(1))


def test_anonymous_visitor_is_sent_to_the_login_page(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login?next=/"


def test_login_page_is_styled_and_sends_the_csp(client):
    response = client.get("/login")
    assert response.status_code == 200
    assert "dashboard/dashboard.css" in response.content.decode()
    assert response[csp.HEADER] == csp.POLICY


def test_owner_logs_in_and_sees_their_device(client, owner, device, other_device):
    response = client.post(
        "/login", {"username": "owner", "password": "owner-password-1"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/"
    assert page_config(response)["device_id"] == "home-p1"
    assert [d.device_id for d in response.context["devices"]] == ["home-p1"]
    assert "next-door" not in response.content.decode()


def test_another_households_device_answers_404_like_a_missing_one(client, owner, other_device):
    client.force_login(owner)
    assert client.get("/?device=next-door").status_code == 404
    assert client.get("/?device=no-such-device").status_code == 404


def test_staff_sees_every_device_and_may_pick_any(client, staff, device, other_device):
    client.force_login(staff)
    response = client.get("/")
    assert [d.device_id for d in response.context["devices"]] == ["home-p1", "next-door"]
    picked = client.get("/?device=next-door")
    assert page_config(picked)["device_id"] == "next-door"


def test_user_without_devices_is_told_so(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("lonely", password="x-pw-12345"))
    response = client.get("/")
    assert response.status_code == 200
    assert "No devices yet" in response.content.decode()
    assert "dashboard-config" not in response.content.decode()


def test_dashboard_has_no_inline_script_or_style_and_sends_the_csp(client, owner, device):
    client.force_login(owner)
    response = client.get("/")
    html = response.content.decode()
    assert response[csp.HEADER] == csp.POLICY
    assert " style=" not in html and "<style" not in html
    # Every <script> loads a file, except the JSON data block (not executable).
    for tag in re.findall(r"<script[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag


def test_logout_is_a_post_and_ends_the_session(client, owner, device):
    client.force_login(owner)
    assert client.get("/logout").status_code == 405
    response = client.post("/logout")
    assert response.status_code == 302 and response["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_caddy_sends_the_same_policy_as_the_app():
    caddyfile = (ROOT / "Caddyfile").read_text()
    policy = re.search(r'Content-Security-Policy "([^"]+)"', caddyfile).group(1)
    assert policy == csp.POLICY


def test_page_config_uses_the_devices_local_day(device):
    # 23:30 UTC on 31 March is already 1 April in Brussels (UTC+2 in summer).
    config = pages.page_config(device, datetime(2026, 3, 31, 23, 30, tzinfo=UTC))
    assert config["today"] == "2026-04-01"
    assert config["month"] == "2026-04"
    assert config["live_refresh_ms"] <= 5000


def test_day_view_opens_on_the_day_asked_for_but_never_in_the_future(client, owner, device):
    client.force_login(owner)
    assert page_config(client.get("/?day=2026-03-29"))["day"] == "2026-03-29"
    today = page_config(client.get("/"))["today"]
    assert page_config(client.get("/?day=2999-01-01"))["day"] == today
    assert page_config(client.get("/?day=yesterday"))["day"] == today


def test_committed_chart_library_matches_the_hashes_the_fetch_script_records():
    assert fetch_vendor.check_committed() == []
    licence = (fetch_vendor.TARGET / "LICENSE.md").read_text()
    assert "MIT" in licence or "Permission is hereby granted" in licence


def test_fetch_script_refuses_a_tarball_with_the_wrong_hash():
    with pytest.raises(fetch_vendor.VendorError, match="integrity mismatch"):
        fetch_vendor.verify_tarball(b"not the chart.js tarball")


def test_a_hand_edited_vendor_file_is_caught(tmp_path):
    for name in fetch_vendor.VENDOR_SHA256:
        (tmp_path / name).write_bytes((fetch_vendor.TARGET / name).read_bytes())
    (tmp_path / "chart.umd.min.js").write_text("/* patched */")
    problems = fetch_vendor.check_committed(tmp_path)
    assert len(problems) == 1 and "chart.umd.min.js" in problems[0]
