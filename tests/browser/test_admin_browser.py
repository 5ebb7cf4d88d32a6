"""The admin in headless Chromium at a 1280 px wide screen, against the household of
tests/browser/conftest.py (its first meter has 13 months of samples and an ingest
token)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.django_db(transaction=True, available_apps=["dashboard"])

STAFF, STAFF_PASSWORD = "operator", "operator-pw-1"
# What does not fit: the page or an element that scrolls sideways (the admin puts its
# change lists in a div.results that scrolls rather than widening the page), and tables
# that reach past the window's right edge (a fieldset's table is cut off there).
SIDEWAYS = """
const right = document.documentElement.clientWidth;
const scrolls = Array.from(document.querySelectorAll("*")).filter((e) =>
  e.scrollWidth > e.clientWidth + 1 &&
  (e === document.documentElement || ["auto", "scroll"].includes(getComputedStyle(e).overflowX)));
const cut = Array.from(document.querySelectorAll("table")).filter(
  (t) => t.getBoundingClientRect().right > right + 1);
return scrolls.concat(cut).map((e) =>
  e.tagName + "." + e.className + " " + e.scrollWidth + ">" + e.clientWidth +
  " right " + Math.round(e.getBoundingClientRect().right) + ">" + right);
"""


@pytest.fixture(scope="module")
def staff(household, django_db_blocker) -> str:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.utils import timezone

    from telemetry.models import Device, DeviceToken
    from telemetry.tokens import issue_token

    with django_db_blocker.unblock():
        user = get_user_model().objects.create_superuser(STAFF)
        user.password = make_password(STAFF_PASSWORD, hasher="pbkdf2_sha256")
        user.save(update_fields=["password"])
        # The widest token row: a label, both scopes, used and revoked.
        device = Device.objects.get(pk=household.device_pk)
        token, _raw = issue_token(device, ["ingest", "read"], label="attic raspberry pi")
        now = timezone.now()
        DeviceToken.objects.filter(pk=token.pk).update(last_used_at=now, revoked_at=now)
    return STAFF


@pytest.fixture
def admin_page(page, staff) -> Iterator:
    """The browser logged in to the admin at 1280 x 900; logged out afterwards, so the
    dashboard tests find their own user's session."""
    page.driver.set_window_size(1280, 900)
    page.driver.delete_all_cookies()
    page.get("/admin/login/")
    page.driver.find_element("id", "id_username").send_keys(STAFF)
    page.driver.find_element("id", "id_password").send_keys(STAFF_PASSWORD)
    page.driver.find_element("css selector", "input[type=submit]").click()
    page.wait(lambda: "/login" not in page.driver.current_url, message="admin login failed")
    yield page
    page.driver.delete_all_cookies()
    page.driver.set_window_size(1280, 1000)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/telemetry/device/",
        "/admin/telemetry/devicetoken/",
        "/admin/telemetry/device/{pk}/change/",
    ],
)
def test_admin_pages_fit_a_1280_px_screen(admin_page, household, path):
    admin_page.get(path.format(pk=household.device_pk))
    admin_page.wait(lambda: admin_page.js("return document.readyState") == "complete")
    assert admin_page.js(SIDEWAYS) == [], path
