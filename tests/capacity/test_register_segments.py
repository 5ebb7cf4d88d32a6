"""A meter swap reads as one continuous story (issue 11, point 3).

The reported case: registers at about 1000 kWh, then the grid operator's new meter
restarts them at 0.5 kWh (and the reverse: the edge is pointed at another meter at
30,000 kWh). Through POST /v1/ingest on a real server process, in time order and as a
backlog, and through manage.py rebuild_capacity over the stored samples; every figure
is checked against tests/capacity/reference.py, which knows nothing of the SQL.
"""

from __future__ import annotations

import io
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.db import connection

from telemetry.models import RegisterBreak, Sample
from telemetry.tokens import issue_token
from tests.capacity import reference
from tests.conftest import bearer
from tests.samples import sample

pytestmark = pytest.mark.django_db(transaction=True)

BRUSSELS = ZoneInfo("Europe/Brussels")
START = datetime(2026, 3, 2, 8, tzinfo=UTC)  # 09:00 in Brussels
SWAP_PREV = datetime(2026, 3, 2, 9, 7, tzinfo=UTC)  # the old meter's last reading
SWAP = datetime(2026, 3, 2, 9, 10, tzinfo=UTC)  # the new meter's first: 3 min unmeasured
END = datetime(2026, 3, 2, 11, tzinfo=UTC)
STEP = timedelta(seconds=10)
POWER_KW = 2.0
OLD_METER = (1000.0, 200.0)  # import, export kWh
NEW_METERS = {
    "replaced meter restarts near 0": ((0.5, 0.2), RegisterBreak.WENT_DOWN),
    "another meter far above": ((30000.0, 5000.0), RegisterBreak.IMPOSSIBLE_STEP),
}


def meter(registers: tuple[float, float], first: datetime, until: datetime) -> list[dict]:
    """A steady 2 kW household: readings every 10 s in [first, until]."""
    out, ts = [], first
    while ts <= until:
        hours = (ts - first).total_seconds() / 3600
        out.append(
            sample(
                ts,
                power_w=POWER_KW * 1000,
                energy_import_kwh=registers[0] + POWER_KW * hours,
                energy_export_kwh=registers[1],
            )
        )
        ts += STEP
    return out


def household(new_meter: tuple[float, float], until: datetime = END - STEP) -> list[dict]:
    return meter(OLD_METER, START, SWAP_PREV) + meter(new_meter, SWAP, until)


def readings(samples: list[dict]) -> list[tuple]:
    return sorted(
        (datetime.fromisoformat(s["ts"]), s["energy_import_kwh"], s["energy_export_kwh"])
        for s in samples
    )


@pytest.fixture
def api(http, server, device):
    ingest_token = issue_token(device, "ingest")[1]
    read_token = issue_token(device, "read")[1]

    class Api:
        def post(self, samples: list[dict]) -> dict:
            response = http.post(
                f"{server.url}/v1/ingest", json={"samples": samples}, headers=bearer(ingest_token)
            )
            assert response.status_code == 200, response.text
            return response.json()

        def post_in_batches(self, samples: list[dict], size: int = 60) -> None:
            for i in range(0, len(samples), size):
                self.post(samples[i : i + size])

        def get(self, path: str, **params) -> dict:
            response = http.get(f"{server.url}{path}", params=params, headers=bearer(read_token))
            assert response.status_code == 200, response.text
            return response.json()

    return Api()


def assert_one_continuous_story(api, samples: list[dict], kind: str) -> None:
    pairs = readings(samples)
    # The step is recorded once, where it is.
    (found,) = api.get("/v1/capacity/register-breaks")["register_breaks"]
    assert found["kind"] == kind
    assert datetime.fromisoformat(found["previous_ts"]) == SWAP_PREV
    assert datetime.fromisoformat(found["ts"]) == SWAP
    assert found["unmeasured_s"] == 180.0

    # Every quarter of the day equals the reference; the swap's quarter counts only
    # its measured parts (7 + 5 minutes at 2 kW: 1.6 kW) and is flagged incomplete.
    day = api.get("/v1/capacity/quarters", date="2026-03-02")["quarters"]
    with_data = [q for q in day if q["kw"] is not None]
    assert len(with_data) == 12
    for q in with_data:
        start = datetime.fromisoformat(q["start"])
        want = reference.segmented_quarter_kw(pairs, start)
        assert q["kw"] == pytest.approx(want["kw"], abs=1e-3), q
        assert q["coverage"] == pytest.approx(want["coverage"], abs=1e-3), q
        assert q["incomplete"] == (want["coverage"] < 0.9), q
    swap_quarter = next(q for q in day if q["start"] == "2026-03-02T10:00:00+01:00")
    assert swap_quarter["kw"] == pytest.approx(1.6, abs=1e-3)
    assert swap_quarter["incomplete"]
    assert all(0 < q["kw"] <= POWER_KW + 1e-3 for q in with_data)

    # The month: a 2 kW peak, not tens of thousands, and the break is shown with it.
    month = api.get("/v1/capacity/month/2026-03")
    assert month["peak"]["kw"] == pytest.approx(POWER_KW, abs=1e-3)
    assert month["billed_peak_kw"] == pytest.approx(2.5)
    assert [b["ts"] for b in month["register_breaks"]] == [found["ts"]]
    (march,) = api.get("/v1/capacity/months", end="2026-03", count="1")["months"]
    assert march["peak_kw"] == pytest.approx(POWER_KW, abs=1e-3)

    # Series: each bucket is the register rise inside segments, never negative or giant.
    for interval in ("15m", "1h", "1d"):
        buckets = api.get("/v1/series", interval=interval, start="2026-03-02", end="2026-03-03")[
            "buckets"
        ]
        assert buckets
        for bucket in buckets:
            lo = datetime.fromisoformat(bucket["start"])
            hi = lo + {"15m": timedelta(minutes=15), "1h": timedelta(hours=1)}.get(
                interval, timedelta(days=1)
            )
            want_import = reference.segmented_energy(pairs, lo, hi, which=1)
            assert bucket["import_kwh"] == pytest.approx(want_import, abs=1e-6), bucket
            assert bucket["export_kwh"] == pytest.approx(0.0, abs=1e-6), bucket
    (whole_day,) = api.get("/v1/series", interval="1d", start="2026-03-02", end="2026-03-03")[
        "buckets"
    ]
    # Three hours at 2 kW less the three unmeasured minutes (and the last 10 s step).
    assert whole_day["import_kwh"] == pytest.approx(POWER_KW * (180 - 3 - 10 / 60) / 60, abs=1e-6)


@pytest.mark.parametrize("case", NEW_METERS)
def test_meter_swap_uploaded_live_reads_as_one_story(api, case):
    new_meter, kind = NEW_METERS[case]
    samples = household(new_meter)
    api.post_in_batches(samples)
    assert_one_continuous_story(api, samples, kind)


@pytest.mark.parametrize("case", NEW_METERS)
def test_meter_swap_uploaded_as_a_backlog_reads_as_one_story(api, case):
    # The new meter's readings arrive first; the old meter's backlog lands before them
    # after an outage, and one batch is retried.
    new_meter, kind = NEW_METERS[case]
    old = meter(OLD_METER, START, SWAP_PREV)
    new = meter(new_meter, SWAP, END - STEP)
    api.post_in_batches(new, size=200)
    api.post_in_batches(old, size=200)
    assert api.post(old[-50:] + new[:50]) == {"received": 100, "inserted": 0, "duplicates": 100}
    assert_one_continuous_story(api, old + new, kind)


@pytest.mark.parametrize("case", NEW_METERS)
def test_realtime_headroom_across_a_meter_swap_in_the_running_quarter(api, case):
    new_meter, _ = NEW_METERS[case]
    latest = SWAP + timedelta(minutes=2)  # 09:12 UTC: the running quarter holds the swap
    samples = household(new_meter, until=latest)
    api.post_in_batches(samples)
    body = api.get("/v1/realtime")
    quarter_start = datetime(2026, 3, 2, 9, tzinfo=UTC)
    # Independently: the energy inside segments since the quarter began, and the
    # headroom formula of the design (watts that could be added for the rest of the
    # quarter without passing the billed peak, max(month peak, 2.5 kW)).
    energy = reference.segmented_energy(readings(samples), quarter_start, latest)
    assert energy == pytest.approx(0.3)  # 7 min and 2 min at 2 kW
    month_peak = reference.month_peak(
        [(ts, v) for ts, v, _ in readings(samples) if ts < quarter_start],
        datetime(2026, 2, 28, 23, tzinfo=UTC),
        quarter_start,
    )
    assert month_peak == pytest.approx(POWER_KW)
    remaining_h = (quarter_start + timedelta(minutes=15) - latest).total_seconds() / 3600
    threshold = max(month_peak, 2.5)
    headroom_w = ((threshold / 4 - energy) / remaining_h - POWER_KW) * 1000
    assert body["quarter"]["headroom_w"] == pytest.approx(headroom_w, abs=1)
    assert body["quarter"]["headroom_w"] == pytest.approx(4500, abs=1)
    assert body["quarter"]["projected_kw"] == pytest.approx(1.6, abs=1e-3)
    assert body["month"]["peak_so_far_kw"] == pytest.approx(POWER_KW, abs=1e-3)


@pytest.mark.parametrize("case", NEW_METERS)
def test_rebuild_capacity_finds_the_swap_in_stored_samples(api, device, case):
    new_meter, kind = NEW_METERS[case]
    samples = household(new_meter)
    api.post_in_batches(samples)
    # As after a bulk load that bypassed ingest: samples, but no breaks and no quarters.
    with connection.cursor() as cursor:
        for table in ("telemetry_registerbreak", "capacity_quarter", "capacity_month"):
            cursor.execute(f"DELETE FROM {table} WHERE device_id = %s", [device.pk])  # noqa: S608
    out = io.StringIO()
    call_command("rebuild_capacity", device.device_id, stdout=out)
    assert out.getvalue() == "rebuilt capacity quarters of home-p1 (1 register break)\n"
    assert_one_continuous_story(api, samples, kind)


def test_backlog_between_the_readings_of_a_step_moves_the_break(api, device):
    new_meter, _ = NEW_METERS["replaced meter restarts near 0"]
    api.post_in_batches(household(new_meter))
    late = meter(new_meter, SWAP - timedelta(seconds=90), SWAP - timedelta(seconds=90))
    late[0]["energy_import_kwh"] = new_meter[0] - 0.05  # 90 s earlier at 2 kW
    for _ in range(2):  # and a retry changes nothing
        api.post(late)
        (found,) = RegisterBreak.objects.filter(device=device)
        assert found.prev_ts == SWAP_PREV
        assert found.ts == SWAP - timedelta(seconds=90)
        assert found.import_kwh == pytest.approx(new_meter[0] - 0.05)


def test_old_and_new_meter_batches_posted_at_once_give_one_break(api, device):
    # A backlog drain from two upload threads: the step lies between their batches.
    new_meter, _ = NEW_METERS["replaced meter restarts near 0"]
    old = meter(OLD_METER, START, SWAP_PREV)
    new = meter(new_meter, SWAP, SWAP + timedelta(minutes=30))
    for attempt in range(5):
        Sample.objects.filter(device=device).delete()
        RegisterBreak.objects.filter(device=device).delete()
        together = threading.Barrier(2)

        def send(batch: list[dict], barrier: threading.Barrier) -> None:
            barrier.wait()
            api.post(batch)

        threads = [threading.Thread(target=send, args=(b, together)) for b in (old, new)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        (found,) = RegisterBreak.objects.filter(device=device)
        assert (found.prev_ts, found.ts) == (SWAP_PREV, SWAP), attempt


def test_steady_meter_has_no_breaks(api, device):
    api.post_in_batches(meter(OLD_METER, START, END - STEP))
    assert not RegisterBreak.objects.filter(device=device).exists()
    assert api.get("/v1/capacity/register-breaks")["register_breaks"] == []


PAIR_AT = datetime(2026, 3, 3, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("what", "seconds", "earlier_export", "later_import", "later_export"),
    [
        ("steady", 2, 200.0, 1000.0007, 200.0),
        ("import down within one register unit", 2, 200.0, 999.9995, 200.0),
        ("import down by exactly one register unit", 2, 200.0, 999.999, 200.0),
        ("import down", 2, 200.0, 999.998, 200.0),
        ("export down", 2, 200.0, 1000.0007, 199.0),
        ("export gone: not compared", 2, 200.0, 1000.0007, None),
        ("export appearing: not compared", 2, None, 1000.0007, 150.0),
        ("import up at 250 kW in 10 s, less a little", 10, 200.0, 1000.0 + 0.694, 200.0),
        ("import up at more than 250 kW", 10, 200.0, 1000.0 + 0.8, 200.0),
    ],
)
def test_the_break_rule_in_memory_agrees_with_the_steps(
    device, what, seconds, earlier_export, later_import, later_export
):
    """capacity.reports carries a realtime answer across readings the steps have not
    seen yet only where they will find no break: both must apply one rule."""
    from telemetry import segments
    from telemetry.pipeline import ingest_batch
    from telemetry.validation import validate_samples

    later_ts = PAIR_AT + timedelta(seconds=seconds)
    pair = [
        sample(PAIR_AT, energy_import_kwh=1000.0, energy_export_kwh=earlier_export),
        sample(later_ts, energy_import_kwh=later_import, energy_export_kwh=later_export),
    ]
    columns, errors = validate_samples(pair, now=PAIR_AT + timedelta(minutes=1))
    assert not errors
    ingest_batch(device, columns)  # no worker: the steps refresh the breaks here
    in_memory = segments.is_break(
        segments.RegisterReading(PAIR_AT, 1000.0, earlier_export),
        segments.RegisterReading(later_ts, later_import, later_export),
    )
    assert in_memory == RegisterBreak.objects.filter(device=device).exists(), what
