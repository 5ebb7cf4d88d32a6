"""The meter's own history reaches the server, and each month carries its provenance.

The edge half runs for real: the simulated meter's telegram (edgeclient.simulator), the
parser, the spool and the uploader, against the session's gunicorn process.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.test import override_settings

from capacity.models import MeterMonthPeak
from edgeclient.history import HistoryReader
from edgeclient.homewizard import HomeWizardClient, MeterConfig
from edgeclient.simulator import P1Simulator, SimulatorConfig
from edgeclient.spool import Spool
from edgeclient.uploader import IngestClient, upload_meter_history
from tests.capacity.test_capacity_api import load
from tests.conftest import bearer

pytestmark = pytest.mark.django_db(transaction=True)

BRUSSELS = ZoneInfo("Europe/Brussels")
TODAY = datetime(2026, 4, 2, 12, 0, tzinfo=BRUSSELS)


def local(*args) -> datetime:
    return datetime(*args, tzinfo=BRUSSELS).astimezone(UTC)


def history_body(months: dict[str, float], current: tuple[str, float] | None = None) -> dict:
    return {
        "read_at": "2026-04-02T12:00:00+02:00",
        "months": [
            {"month": m, "peak_kw": kw, "peak_ts": f"{m}-10T18:15:00+01:00"}
            for m, kw in months.items()
        ],
        "current": None
        if current is None
        else {"month": current[0], "peak_kw": current[1], "peak_ts": None},
    }


ELEVEN = {f"{y:04d}-{m:02d}": 3.0 + i / 10 for i, (y, m) in enumerate(
    [(2025, 5), (2025, 6), (2025, 7), (2025, 8), (2025, 9), (2025, 10), (2025, 11),
     (2025, 12), (2026, 1), (2026, 2), (2026, 3)]
)}  # fmt: skip


@pytest.fixture
def post(client, ingest_token):
    def send(body: dict, token: str = ingest_token):
        return client.post(
            "/v1/meter-history", body, content_type="application/json", headers=bearer(token)
        )

    return send


@pytest.fixture
def read(client, read_token, device):
    def get(path: str, **params):
        params.setdefault("device_id", device.device_id)
        response = client.get(path, params, headers=bearer(read_token))
        assert response.status_code == 200, response.content
        return response.json()

    return get


def test_a_new_meter_shows_its_own_months_on_its_first_day(device, post, read):
    assert post(history_body(ELEVEN, ("2026-04", 1.9))).json() == {"received": 12, "changed": 12}
    load(device, local(2026, 4, 2, 8), local(2026, 4, 2, 12), lambda ts: 1.2)
    body = read("/v1/capacity/month/2026-04")
    months = body["rolling_average"]["months"]
    assert [m["source"] for m in months] == ["meter-reported"] * 11 + ["measured"]
    figures = [*ELEVEN.values(), 1.2]
    expected = sum(max(kw, 2.5) for kw in figures) / 12
    assert body["rolling_average"]["kw"] == pytest.approx(expected, abs=1e-3)
    assert body["rolling_average"]["missing_month_policy"] == "floor"
    assert months[-1]["coverage"] == pytest.approx(16 / 2880, abs=1e-3)  # 4 h of 30 days
    assert months[-1]["counted"] is True


def test_without_a_telegram_the_twelve_months_are_measured_or_missing(device, read):
    load(device, local(2026, 4, 2, 8), local(2026, 4, 2, 12), lambda ts: 3.5)
    body = read("/v1/capacity/month/2026-04")
    months = body["rolling_average"]["months"]
    assert [m["source"] for m in months] == ["missing"] * 11 + ["measured"]
    assert body["rolling_average"]["kw"] == pytest.approx((11 * 2.5 + 3.5) / 12, abs=1e-3)
    assert body["tariff"] is None and body["estimated_cost"] is None


def test_repeating_a_history_changes_nothing(device, post):
    body = history_body(ELEVEN)
    assert post(body).json()["changed"] == 11
    assert post(body).json() == {"received": 11, "changed": 0}
    assert MeterMonthPeak.objects.filter(device=device).count() == 11


def test_a_closed_meter_month_beats_ours_and_ours_beats_the_running_figure(device, post, read):
    register = load(device, local(2026, 3, 10, 18), local(2026, 3, 10, 19), lambda ts: 2.8)
    load(device, local(2026, 4, 1, 8), local(2026, 4, 1, 9), lambda ts: 4.0, register=register)
    post(history_body({"2026-03": 6.1}, ("2026-04", 4.4)))
    months = read("/v1/capacity/month/2026-04")["rolling_average"]["months"]
    march, april = months[-2], months[-1]
    assert (march["source"], march["peak_kw"]) == ("meter-reported", 6.1)
    assert (april["source"], april["peak_kw"]) == ("measured", pytest.approx(4.0, abs=1e-3))
    table = read("/v1/capacity/months", end="2026-04", count=2)["months"]
    assert table[1]["peak_kw"] == pytest.approx(2.8, abs=1e-3)  # ours, as before
    assert table[1]["provenance"] == {
        "source": "meter-reported",
        "measured_kw": pytest.approx(2.8, abs=1e-3),
        "meter_reported_kw": 6.1,
        "meter_closed": True,
        "imported_kw": None,
        "kw": 6.1,
        "coverage": round(4 / 2976, 3),  # 4 complete quarters of 31 days
    }


def test_the_running_meter_figure_stands_in_when_we_measured_nothing(device, post, read):
    post(history_body({}, ("2026-04", 3.3)))
    april = read("/v1/capacity/month/2026-04")["rolling_average"]["months"][-1]
    assert (april["source"], april["peak_kw"], april["coverage"]) == ("meter-reported", 3.3, None)


def test_a_running_figure_never_replaces_a_closed_month(device, post):
    post(history_body({"2026-03": 6.1}))
    later = history_body({}, ("2026-03", 2.0))
    later["read_at"] = "2026-04-03T12:00:00+02:00"
    assert post(later).json()["changed"] == 0
    assert MeterMonthPeak.objects.get(device=device).peak_kw == 6.1


@override_settings(CAPACITY_MISSING_MONTH="exclude")
def test_the_exclude_policy_averages_only_the_months_with_a_figure(device, post, read):
    post(history_body({"2026-02": 5.0, "2026-03": 4.0}))
    body = read("/v1/capacity/month/2026-04")["rolling_average"]
    assert body["kw"] == pytest.approx(4.5)
    assert body["missing_month_policy"] == "exclude"
    assert [m["counted"] for m in body["months"]] == [False] * 9 + [True, True, False]


@override_settings(CAPACITY_MISSING_MONTH="exclude")
def test_with_every_month_excluded_the_average_is_the_floor(device, read):
    assert read("/v1/capacity/month/2026-04")["rolling_average"]["kw"] == 2.5


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"months": [{"month": "2026-13", "peak_kw": 1.0, "peak_ts": None}]}, 400),
        ({"months": [{"month": "2026-03", "peak_kw": -1.0, "peak_ts": None}]}, 400),
        ({"read_at": "yesterday"}, 400),
        ({"device_id": "next-door"}, 403),
    ],
)
def test_a_bad_history_is_refused_and_changes_nothing(device, post, change, status):
    response = post({**history_body(ELEVEN), **change})
    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    assert not MeterMonthPeak.objects.exists()


def test_a_read_token_cannot_post_a_history(device, post, read_token):
    assert post(history_body(ELEVEN), token=read_token).status_code == 403


def test_the_edge_sends_the_simulated_meters_history_once(server, device, ingest_token, tmp_path):
    now = datetime(2026, 4, 2, 10, 0, tzinfo=UTC)
    sim = P1Simulator(SimulatorConfig(api="v1", seed=5, clock=lambda: now.timestamp())).start()
    try:
        with (
            HomeWizardClient(MeterConfig(host=sim.address, api="v1")) as meter,
            Spool(tmp_path / "spool.db") as spool,
            IngestClient(server.url, ingest_token) as ingest,
        ):
            assert HistoryReader(meter, spool, now=lambda: now).step()
            body = spool.pending_meter_history()
            assert upload_meter_history(spool, ingest) is True
            assert upload_meter_history(spool, ingest) is None  # acknowledged: nothing left
            spool.put_meter_history(body)  # the same read again, as after a lost answer
            assert upload_meter_history(spool, ingest) is True
    finally:
        sim.stop()
    stored = MeterMonthPeak.objects.filter(device=device)
    assert stored.filter(closed=True).count() == 13
    assert stored.filter(closed=False).get().month == TODAY.date().replace(day=1)
    assert {f"{row.month:%Y-%m}" for row in stored.filter(closed=True)} == {
        m["month"] for m in body["months"]
    }
    assert body["months"][-1]["month"] == "2026-03"
    assert datetime.fromisoformat(body["read_at"]) - now < timedelta(seconds=1)


def test_errors_of_a_nested_field_are_named_by_their_path(device, post):
    body = {**history_body(ELEVEN), "current": {}}
    body["months"][1]["peak_kw"] = "many"
    errors = post(body).json()["errors"]
    assert set(errors) >= {"current.month", "current.peak_kw", "months.1.peak_kw"}
    assert all(isinstance(m, str) for messages in errors.values() for m in messages)


def test_a_partial_import_is_the_figure_of_a_month_nothing_else_has(device, read):
    """Ten days of the operator's quarters in February (a download that ends there): the
    month is imported at its highest quarter rather than missing; March, measured by
    nobody, stays missing."""
    from capacity.models import OperatorQuarter

    start = local(2026, 2, 1).astimezone(UTC)
    OperatorQuarter.objects.bulk_create(
        OperatorQuarter(
            device=device,
            bucket=start + timedelta(minutes=15 * n),
            import_kwh=1.5 if n == 100 else 0.5,
            kw=6.0 if n == 100 else 2.0,
            status="Gevalideerd",
            ean="541448820052377134",
            imported_at=start,
        )
        for n in range(10 * 96)
    )
    months = read("/v1/capacity/month/2026-04")["rolling_average"]["months"]
    by_month = {m["month"]: m for m in months}
    assert by_month["2026-02"]["source"] == "imported"
    assert by_month["2026-02"]["peak_kw"] == pytest.approx(6.0)
    assert by_month["2026-03"]["source"] == "missing"
