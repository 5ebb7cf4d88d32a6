"""What the demo makes before it runs anything, and what a second run reuses."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from demo import bootstrap
from telemetry.models import DeviceToken, Sample
from telemetry.tokens import find_active_token

NOW = datetime(2026, 11, 20, 14, 7, 31, tzinfo=UTC)


@pytest.fixture
def paths(tmp_path: Path) -> bootstrap.DemoPaths:
    paths = bootstrap.DemoPaths.under(tmp_path)
    paths.create()
    return paths


@pytest.mark.django_db
def test_admin_password_is_generated_private_and_reused(paths):
    username, password = bootstrap.ensure_admin(paths)
    assert len(password) >= 24
    assert paths.password_file.stat().st_mode & 0o777 == 0o600
    assert bootstrap.ensure_admin(paths) == (username, password)
    user = get_user_model().objects.get(username=username)
    assert user.is_superuser and user.check_password(password)


@pytest.mark.django_db
def test_a_lost_password_file_gets_a_new_password_for_the_same_admin(paths):
    _, old = bootstrap.ensure_admin(paths)
    paths.password_file.unlink()
    _, new = bootstrap.ensure_admin(paths)
    assert new != old
    assert get_user_model().objects.count() == 1
    assert get_user_model().objects.get().check_password(new)


@pytest.mark.django_db
def test_the_ingest_token_is_kept_and_replaced_only_when_it_stopped_working(paths):
    username, _ = bootstrap.ensure_admin(paths)
    device = bootstrap.ensure_device(username)
    token = bootstrap.ensure_ingest_token(device, paths)
    assert paths.token_file.stat().st_mode & 0o777 == 0o600
    assert bootstrap.ensure_ingest_token(device, paths) == token
    assert bootstrap.ensure_device(username) == device
    assert DeviceToken.objects.count() == 1

    DeviceToken.objects.update(revoked_at=timezone.now())
    renewed = bootstrap.ensure_ingest_token(device, paths)
    assert renewed != token
    assert find_active_token(renewed).device == device
    assert DeviceToken.objects.filter(revoked_at__isnull=True).count() == 1


@pytest.mark.django_db
def test_a_later_run_fills_only_the_gap_and_ends_on_the_live_meter(device):
    first = bootstrap.ensure_history(device, now=NOW, months=1, seed=1)
    assert first.inserted > 5000
    assert bootstrap.ensure_history(device, now=NOW + timedelta(minutes=2), months=1, seed=1) == (
        bootstrap.HistoryResult(0, None)
    )
    later = NOW + timedelta(hours=3)
    gap = bootstrap.ensure_history(device, now=later, months=1, seed=1)
    assert gap.inserted == 3 * 12
    rows = list(
        Sample.objects.filter(device=device)
        .order_by("ts")
        .values_list("energy_import_t1_kwh", "energy_import_t2_kwh", "energy_export_kwh")
    )
    for before, after in itertools.pairwise(rows):
        assert all(b <= a for b, a in zip(before, after, strict=True))
    last = Sample.objects.filter(device=device).latest("ts")
    meter = bootstrap.meter_registers(1, last.ts)
    assert (last.energy_import_t1_kwh, last.energy_import_t2_kwh) == pytest.approx(
        (meter.import_t1, meter.import_t2), abs=0.002
    )
