"""The admin shows register breaks (meter swaps): a list of its own and on the device page."""

from __future__ import annotations

from datetime import timedelta

import pytest

from telemetry.models import RegisterBreak
from tests.samples import BASE_TS, meter_swap, sample
from tests.test_admin import INLINE_SCRIPT, store

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    admin = django_user_model.objects.create_superuser("admin", password="admin-pw-123")
    client.force_login(admin)
    return client


@pytest.fixture
def swapped(device):
    """Readings at about 10,000 kWh, then a new meter that starts at 0.5 kWh."""
    store(device, meter_swap())
    return device


def test_device_page_lists_its_register_breaks(admin_client, swapped):
    page = admin_client.get(f"/admin/telemetry/device/{swapped.pk}/change/").content.decode()
    assert "Register breaks" in page
    assert "went-down" in page
    assert "2026-03-01 01:05:00 CET" in page  # the new meter's first reading, local time
    assert "2026-03-01 01:00:50 CET" in page  # the old meter's last
    assert "→ 0.5" in page
    assert "→ none" in page  # the new meter has no export registers
    assert not INLINE_SCRIPT.search(page)


def test_device_without_breaks_says_so(admin_client, device):
    store(device, [sample(BASE_TS + timedelta(seconds=i)) for i in range(5)])
    page = admin_client.get(f"/admin/telemetry/device/{device.pk}/change/").content.decode()
    assert "No register breaks" in page


def test_register_break_list_is_read_only(admin_client, swapped):
    page = admin_client.get("/admin/telemetry/registerbreak/").content.decode()
    assert "went-down" in page
    assert "home-p1" in page
    found = RegisterBreak.objects.get()
    assert admin_client.get("/admin/telemetry/registerbreak/add/").status_code == 403
    response = admin_client.post(
        f"/admin/telemetry/registerbreak/{found.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 403
    assert RegisterBreak.objects.filter(pk=found.pk).exists()
