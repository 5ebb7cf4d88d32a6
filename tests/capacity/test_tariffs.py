"""Network areas and prices: each month priced with its own year's table, VAT, the
per-device override, the social tariff, and regions without a capacity tariff."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from capacity import tariffs
from telemetry.models import NETWORK_AREAS, Device
from tests.capacity.test_capacity_api import load
from tests.conftest import bearer
from tests.test_admin import admin_client  # noqa: F401 - the staff persona's fixture

pytestmark = pytest.mark.django_db(transaction=True)

BRUSSELS = ZoneInfo("Europe/Brussels")
IMEWO_2026 = 54.2009816  # capacity/tariffs.py, from the 2026 tariff sheet


def local(*args) -> datetime:
    return datetime(*args, tzinfo=BRUSSELS).astimezone(UTC)


@pytest.fixture
def read(client, read_token, device):
    def get(path: str, **params):
        params.setdefault("device_id", device.device_id)
        response = client.get(path, params, headers=bearer(read_token))
        assert response.status_code == 200, response.content
        return response.json()

    return get


def set_device(device: Device, **fields) -> None:
    Device.objects.filter(pk=device.pk).update(**fields)


def test_every_flemish_area_has_its_2026_price_and_2025_is_stated_as_unknown():
    flemish = [a for a, _ in NETWORK_AREAS if tariffs.REGION_OF_AREA[a] == tariffs.FLANDERS]
    assert len(flemish) == 8
    assert set(tariffs.REGION_OF_AREA) == {a for a, _ in NETWORK_AREAS}
    assert all(tariffs.CAPACITY_PRICE_EXCL_VAT[2026][a] is not None for a in flemish)
    assert all(tariffs.CAPACITY_PRICE_EXCL_VAT[2025][a] is None for a in flemish)


def test_a_month_is_priced_with_its_areas_table_of_that_year_with_and_without_vat(device, read):
    set_device(device, network_area="fluvius-imewo")
    load(device, local(2026, 3, 10, 18), local(2026, 3, 10, 19), lambda ts: 4.0)
    body = read("/v1/capacity/month/2026-03")
    average = body["rolling_average"]["kw"]
    assert body["tariff"] == {
        "status": "table",
        "network_area": "fluvius-imewo",
        "region": "flanders",
        "year": 2026,
        "price_eur_per_kw_year": IMEWO_2026,
        "vat_rate": 0.06,
    }
    cost = body["estimated_cost"]
    yearly = IMEWO_2026 * average
    assert cost["yearly_eur"] == round(yearly, 2)
    assert cost["monthly_eur"] == round(yearly / 12, 2)
    assert cost["yearly_eur_incl_vat"] == round(yearly * 1.06, 2)
    assert cost["monthly_eur_incl_vat"] == round(yearly * 1.06 / 12, 2)
    assert (cost["price_source"], cost["tariff_year"]) == ("table", 2026)


def test_each_row_of_the_month_table_uses_its_own_years_price(device, read):
    set_device(device, network_area="fluvius-imewo")
    rows = read("/v1/capacity/months", end="2026-02", count=3)["months"]
    assert [r["month"] for r in rows] == ["2026-02", "2026-01", "2025-12"]
    assert rows[0]["estimated_cost"]["tariff_year"] == 2026
    assert rows[0]["estimated_cost"]["monthly_eur"] == round(IMEWO_2026 * 2.5 / 12, 2)
    assert rows[2]["estimated_cost"] is None  # no published 2025 figure in our sources
    assert read("/v1/capacity/month/2025-12")["tariff"]["status"] == "unpriced"


def test_the_devices_own_price_still_wins_over_the_table(device, read):
    set_device(device, network_area="fluvius-west", capacity_price_eur_per_kw_year=Decimal("50"))
    body = read("/v1/capacity/month/2026-03")
    assert body["tariff"]["status"] == "override"
    assert body["estimated_cost"]["price_eur_per_kw_year"] == 50.0
    assert body["estimated_cost"]["yearly_eur"] == 125.0  # 2.5 kW x 50


@pytest.mark.parametrize("area", ["wallonia", "brussels"])
def test_a_region_without_a_measured_peak_tariff_is_stated_not_priced(device, read, area):
    set_device(device, network_area=area, capacity_price_eur_per_kw_year=Decimal("50"))
    body = read("/v1/capacity/month/2026-03")
    assert body["tariff"]["status"] == "no-capacity-tariff"
    assert body["tariff"]["region"] == area
    assert body["estimated_cost"] is None


def test_the_social_tariff_exempts_the_device(device, read):
    set_device(device, network_area="fluvius-limburg", social_tariff=True)
    body = read("/v1/capacity/month/2026-03")
    assert body["tariff"]["status"] == "social-tariff"
    cost = body["estimated_cost"]
    assert (cost["yearly_eur"], cost["yearly_eur_incl_vat"], cost["price_source"]) == (
        0.0,
        0.0,
        "social-tariff",
    )


def test_staff_choose_the_area_and_the_social_tariff_in_the_admin(admin_client, device):  # noqa: F811
    url = f"/admin/telemetry/device/{device.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="network_area"' in page and "Fluvius Zenne-Dijle" in page
    response = admin_client.post(
        url,
        {
            "device_id": device.device_id,
            "name": device.name,
            "owner": device.owner_id,
            "timezone": device.timezone,
            "network_area": "fluvius-zenne-dijle",
            "social_tariff": "on",
            "capacity_price_eur_per_kw_year": "",
            "ean": "541448820052377134",
            # The inlines' management forms (tokens, peak guard): nothing added there.
            **{
                f"{inline}-{key}": "0"
                for inline in ("tokens", "peak_guard")
                for key in ("TOTAL_FORMS", "INITIAL_FORMS")
            },
        },
    )
    assert response.status_code == 302
    device.refresh_from_db()
    assert (device.network_area, device.social_tariff, device.ean) == (
        "fluvius-zenne-dijle",
        True,
        "541448820052377134",
    )
