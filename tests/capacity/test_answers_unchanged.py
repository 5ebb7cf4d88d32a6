"""On data without telegrams and without imports, the capacity answers are what they
were before month provenance, areas and prices (issue 14), byte for byte, apart from
the fields added.

fixtures/answers_before_provenance.json holds the answers of main at ac72e29 to the
requests below, on the data ``load_households`` writes (generated with this module's
code on that commit). Each answer here must equal it once the keys that commit did not
have are taken out: same values, same key order, same statuses.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from telemetry.models import Device
from telemetry.pipeline import ingest_batch
from telemetry.tokens import issue_token
from telemetry.validation import validate_samples
from tests.conftest import bearer
from tests.samples import sample

pytestmark = pytest.mark.django_db(transaction=True)

BRUSSELS = ZoneInfo("Europe/Brussels")
BEFORE = Path(__file__).parent / "fixtures" / "answers_before_provenance.json"
DEVICE_PK = 914_000
URLS = [
    "/v1/capacity/month/2026-03",
    "/v1/capacity/month/2026-04",
    "/v1/capacity/month/2025-12",
    "/v1/capacity/months?end=2026-04&count=13",
    "/v1/capacity/months?end=2026-04&count=1",
    "/v1/capacity/quarters?date=2026-03-14",
    "/v1/capacity/register-breaks",
]


def local(*args) -> datetime:
    return datetime(*args, tzinfo=BRUSSELS).astimezone(UTC)


def load_households() -> list[tuple[Device, str]]:
    """Two devices (one with a price of its own), five weeks of samples every 4 minutes
    with the meter's running peak, a sparse day (the 20th) and an evening peak."""
    households = []
    for index, price in enumerate([None, Decimal("53.2")]):
        # A primary key of its own: `flush` (tests/browser/conftest.py) leaves the unmanaged
        # rollup tables, so a device that reuses a flushed device's key on SQLite would
        # read that device's rollups.
        device = Device.objects.create(
            pk=DEVICE_PK + index, device_id=f"d{index}", capacity_price_eur_per_kw_year=price
        )
        samples, ts, register, n = [], local(2026, 2, 25), 1000.0, 0
        while ts < local(2026, 4, 3):
            kw = 1.0 + (n % 97) / 20 + (3.0 if ts.hour == 19 and ts.day == 14 else 0)
            one = sample(ts, power_w=kw * 1000, energy_import_kwh=register)
            one["monthly_power_peak_w"] = 4000.0 + n % 500
            one["monthly_power_peak_ts"] = ts.isoformat()
            samples.append(one)
            register += kw * 240 / 3600
            ts += timedelta(seconds=240 if ts.day != 20 else 1200)
            n += 1
        for i in range(0, len(samples), 5000):
            columns, errors = validate_samples(samples[i : i + 5000], now=timezone.now())
            assert not errors
            ingest_batch(device, columns)
        households.append((device, issue_token(device, "read")[1]))
    return households


def without_added(new, old):
    """``new`` with every key ``old`` lacks taken out, recursively, in ``new``'s order."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: without_added(v, old[k]) for k, v in new.items() if k in old}
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        return [without_added(a, b) for a, b in zip(new, old, strict=True)]
    return new


def first_difference(new, old, path: str = "") -> str | None:
    """Where two answers first differ (for the failure message)."""
    if isinstance(new, dict) and isinstance(old, dict):
        if list(new) != list(old):
            return f"{path}: keys {list(new)} != {list(old)}"
        found = (first_difference(new[k], old[k], f"{path}.{k}") for k in new)
        return next((f for f in found if f), None)
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        pairs = enumerate(zip(new, old, strict=True))
        found = (first_difference(a, b, f"{path}[{i}]") for i, (a, b) in pairs)
        return next((f for f in found if f), None)
    return None if new == old else f"{path}: {new!r} != {old!r}"


def test_answers_without_telegrams_or_imports_are_unchanged_but_for_added_fields(client):
    before = json.loads(BEFORE.read_text())
    for device, token in load_households():
        for url in URLS:
            sep = "&" if "?" in url else "?"
            response = client.get(f"{url}{sep}device_id={device.device_id}", headers=bearer(token))
            status, body = before[f"{device.device_id} {url}"]
            old = json.loads(body)
            assert response.status_code == status, url
            new = without_added(response.json(), old)
            assert json.dumps(new) == json.dumps(old), (url, first_difference(new, old))
