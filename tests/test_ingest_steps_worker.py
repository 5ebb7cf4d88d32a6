"""The steps a stored batch owes, done later and for many batches at once: by the
ingest-steps worker (a real manage.py run_ingest_steps process) or by the next request.

The promises: the batch is stored before the answer; its capacity follows within two
worker cycles (one that may have begun before the batch committed, and the next); the
owed work survives a worker killed at any moment; one device's failure holds no other
back.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from capacity.materialize import rebuild
from p1common.processes import WORKER_CYCLE, run_server, start_steps_worker
from telemetry import pipeline
from telemetry.models import Device, DeviceToken, PendingBatch
from telemetry.pacing import DEADLINE_SHARE, Pace
from telemetry.storage import plan_for
from telemetry.validation import validate_samples
from tests.conftest import bearer
from tests.samples import REGISTER_EPOCH, sample, series
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REGISTER_BREAK_LOCK = 0x5E65  # telemetry.storage.postgres._LOCK_CLASS


def device_rows(device_pk: int, columns: str, table: str, order: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM {table} WHERE device_id = %s ORDER BY {order}",  # noqa: S608
            [device_pk],
        )
        return cursor.fetchall()


def capacity_rows(device_pk: int) -> list[tuple]:
    quarters = device_rows(
        device_pk, "bucket, kw, coverage, sample_count", "capacity_quarter", "bucket"
    )
    months = device_rows(
        device_pk, "month_start, peak_kw, peak_bucket", "capacity_month", "month_start"
    )
    return quarters + months


def assert_capacity_as_rebuilt(device_pk: int) -> None:
    found = capacity_rows(device_pk)
    assert found, "no capacity rows at all"
    rebuild(device_pk)
    assert capacity_rows(device_pk) == found


def recent_series(count: int, minutes_ago: int = 40) -> list[dict]:
    start = timezone.now().replace(microsecond=0) - timedelta(minutes=minutes_ago)
    return series(count, start=start, step_s=10)


def store(device: Device, samples: list[dict], token_pk: int | None = None) -> int:
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors
    return plan_for().insert_batch(device.pk, columns, token_pk)


def test_with_the_worker_a_batch_is_stored_at_once_and_its_capacity_follows_within_two_cycles(
    device, ingest_token, tmp_path
):
    with run_server(INGEST_STEPS_WORKER="on", INGEST_THROTTLE_RATE="off") as srv:
        with httpx.Client(timeout=30) as http:
            response = http.post(
                f"{srv.url}/v1/ingest",
                json={"samples": recent_series(120)},
                headers=bearer(ingest_token),
            )
            assert response.status_code == 200, response.text
            assert response.json()["inserted"] == 120
            # Stored and owed; nothing derived yet: no worker has run. Readiness says so.
            assert PendingBatch.objects.filter(device=device).count() == 1
            assert capacity_rows(device.pk) == []
            assert http.get(f"{srv.url}/readyz").json()["owed_steps_age_s"] >= 0
            worker = start_steps_worker(0.2, log_path=tmp_path / "worker.log")
            try:
                worker.log.wait_for(f"{WORKER_CYCLE}1 devices, 1 batches, 0 failed")
                # The next cycle began after that one committed.
                worker.log.wait_for(WORKER_CYCLE, count=2)
            finally:
                worker.stop()
            assert http.get(f"{srv.url}/readyz").json()["owed_steps_age_s"] is None
    assert not PendingBatch.objects.exists()
    assert_capacity_as_rebuilt(device.pk)
    token = DeviceToken.objects.get(device=device)
    assert token.last_used_at is not None


def test_a_worker_killed_mid_cycle_loses_no_owed_work(owner, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("holds a worker inside its cycle with a PostgreSQL advisory lock")
    devices = [Device.objects.create(device_id=f"home-{n}", owner=owner) for n in range(4)]
    for d in devices:
        store(d, recent_series(60))
    blocked = devices[2]
    with connection.cursor() as cursor:
        # The worker does one device per commit and waits here, inside its third.
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [REGISTER_BREAK_LOCK, blocked.pk])
        worker = start_steps_worker(60, chunk=1, log_path=tmp_path / "worker.log")
        try:

            def waiting_for_the_lock() -> bool:
                cursor.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND NOT granted AND objid = %s",
                    [blocked.pk],
                )
                return cursor.fetchone()[0] == 1

            wait_until(waiting_for_the_lock, what="the worker blocked on the third device")
            worker.terminate(signal.SIGKILL)
        finally:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [REGISTER_BREAK_LOCK, blocked.pk])
            worker.stop()
    owed = set(PendingBatch.objects.values_list("device_id", flat=True))
    assert owed == {devices[2].pk, devices[3].pk}
    assert capacity_rows(devices[2].pk) == []
    # A new worker does what the dead one left.
    call_command("run_ingest_steps", "--once")
    assert not PendingBatch.objects.exists()
    for d in devices:
        assert_capacity_as_rebuilt(d.pk)


def test_a_device_whose_steps_fail_keeps_its_work_and_holds_no_other_back(owner):
    good = Device.objects.create(device_id="home-good", owner=owner)
    broken = Device.objects.create(device_id="home-broken", owner=owner)
    for d in (good, broken):
        store(d, recent_series(30))
    # A time zone no step can read (the admin form refuses it; the column does not).
    Device.objects.filter(pk=broken.pk).update(timezone="Nowhere/Atlantis")

    run = pipeline.run_owed_steps()

    assert (run.devices, run.failed_devices) == (2, 1)
    assert list(PendingBatch.objects.values_list("device_id", flat=True)) == [broken.pk]
    assert_capacity_as_rebuilt(good.pk)


steps_seen: list[pipeline.StoredBatch] = []


def recording_step(batches: Sequence[pipeline.StoredBatch]) -> None:
    steps_seen.extend(batches)


def storing_step(batches: Sequence[pipeline.StoredBatch]) -> None:
    """A batch of the same device arriving while its owed work is being done."""
    steps_seen.extend(batches)
    if len(steps_seen) == 1:
        device = Device.objects.get(pk=batches[0].device_pk)
        store(device, series(3, start=batches[0].newest + timedelta(seconds=10)))


@override_settings(INGEST_STEPS=["tests.test_ingest_steps_worker.recording_step"])
def test_spans_close_together_are_one_step_and_far_apart_are_each_their_own(device):
    steps_seen.clear()
    today = recent_series(6, minutes_ago=20)
    minutes_later = recent_series(6, minutes_ago=5)
    last_winter = series(6)  # tests.samples.BASE_TS, months before
    for samples in (today, last_winter, minutes_later):
        store(device, samples)

    run = pipeline.run_owed_steps()

    assert (run.devices, run.batches) == (1, 3)
    spans = [(b.oldest, b.newest, b.inserted) for b in steps_seen]
    first, last = (
        validate_samples(s, now=timezone.now())[0][0] for s in (last_winter, minutes_later)
    )
    today_ts = validate_samples(today, now=timezone.now())[0][0]
    assert spans == [(min(first), max(first), 6), (min(today_ts), max(last), 12)]


@override_settings(INGEST_STEPS=["tests.test_ingest_steps_worker.storing_step"])
def test_a_batch_stored_while_the_owed_work_runs_stays_owed(device):
    steps_seen.clear()
    store(device, recent_series(6))

    pipeline.run_owed_steps()

    (left,) = PendingBatch.objects.filter(device=device)
    assert left.inserted == 3
    pipeline.run_owed_steps()
    assert not PendingBatch.objects.exists()
    assert len(steps_seen) == 2


def test_without_a_worker_the_request_does_its_own_steps_before_it_answers(
    http, server, device, ingest_token
):
    response = http.post(
        f"{server.url}/v1/ingest", json={"samples": recent_series(60)}, headers=bearer(ingest_token)
    )
    assert response.status_code == 200
    assert not PendingBatch.objects.exists()
    assert_capacity_as_rebuilt(device.pk)


def test_the_token_last_use_is_written_with_the_owed_steps(device):
    token = DeviceToken.objects.create(device=device, prefix="abcdefgh", token_hash="0" * 64)
    store(device, recent_series(3), token.pk)
    assert DeviceToken.objects.get(pk=token.pk).last_used_at is None

    pipeline.run_owed_steps()

    used = DeviceToken.objects.get(pk=token.pk).last_used_at
    assert used is not None
    assert timezone.now() - used < timedelta(minutes=1)


def test_a_bad_interval_is_refused_in_one_line():
    with pytest.raises(CommandError, match="--interval: must be above 0"):
        call_command("run_ingest_steps", "--once", "--interval", "0")


@pytest.mark.parametrize("duty", ["0", "101"])
def test_a_bad_duty_is_refused_in_one_line(duty):
    with pytest.raises(CommandError, match="--duty-percent: must be from 1 to 100"):
        call_command("run_ingest_steps", "--once", "--duty-percent", duty)


class SteppingClock:
    """Moves a tenth of a second at every reading, so each chunk appears to work 0.1 s;
    the rests asked for are recorded, not slept."""

    def __init__(self) -> None:
        self.now = 0.0
        self.rests: list[float] = []

    def __call__(self) -> float:
        self.now += 0.1
        return self.now

    def rest(self, seconds: float) -> None:
        self.rests.append(seconds)


def test_a_paced_run_rests_between_its_chunks_and_derives_what_a_rebuild_derives(owner):
    devices = [Device.objects.create(device_id=f"home-{n}", owner=owner) for n in range(3)]
    for d in devices:
        store(d, recent_series(30))
    clock = SteppingClock()

    run = pipeline.run_owed_steps(
        chunk=1, pace=Pace(0.5, deadline=1000.0, clock=clock, rest=clock.rest)
    )

    assert (run.devices, run.failed_devices) == (3, 0)
    # After reading the records and after the first and the second chunk, as long as
    # each worked: none after the last.
    assert clock.rests == pytest.approx([0.1, 0.1, 0.1])
    assert not PendingBatch.objects.exists()
    for d in devices:
        assert_capacity_as_rebuilt(d.pk)


def test_a_stop_during_a_rest_ends_the_run_and_what_is_left_stays_owed(owner):
    devices = [Device.objects.create(device_id=f"home-{n}", owner=owner) for n in range(3)]
    for d in devices:
        store(d, recent_series(30))
    stop = threading.Event()
    clock = SteppingClock()

    def rest(seconds: float) -> None:
        clock.rest(seconds)
        if len(clock.rests) == 2:  # the rest after the first chunk
            stop.set()

    run = pipeline.run_owed_steps(
        chunk=1, stop=stop, pace=Pace(0.5, deadline=1e12, clock=clock, rest=rest)
    )

    assert run.devices == 1
    owed = set(PendingBatch.objects.values_list("device_id", flat=True))
    assert owed == {devices[1].pk, devices[2].pk}
    assert_capacity_as_rebuilt(devices[0].pk)
    call_command("run_ingest_steps", "--once")
    for d in devices:
        assert_capacity_as_rebuilt(d.pk)


def test_a_paced_worker_process_rests_between_chunks_and_ends_its_cycle_in_time(owner, tmp_path):
    devices = [Device.objects.create(device_id=f"home-{n}", owner=owner) for n in range(4)]
    for d in devices:
        store(d, recent_series(30))
    interval = 4.0
    worker = start_steps_worker(
        interval, chunk=1, log_path=tmp_path / "worker.log", INGEST_STEPS_DUTY_PERCENT="25"
    )
    try:
        line = worker.log.wait_for(f"{WORKER_CYCLE}4 devices, 4 batches, 0 failed")
    finally:
        worker.stop()
    took, rested = (float(x) for x in re.findall(r"([\d.]+) s", line))
    assert rested > 0
    # Its work permitting, a paced cycle ends within its share of the interval.
    assert took <= interval * DEADLINE_SHARE + 0.5
    assert not PendingBatch.objects.exists()
    for d in devices:
        assert_capacity_as_rebuilt(d.pk)


# --- one run for many devices -----------------------------------------------------------

WEDNESDAY = datetime(2026, 11, 4, 10, 0, tzinfo=UTC)  # mid-day, mid-week: no block closes


def readings(start: datetime, count: int, seed: int, step_s: int = 10) -> list[dict]:
    """``count`` readings from ``start`` of a household drawing 0.5 to 5.5 kW, its
    registers rising 6 kWh an hour between readings' spans (so no two batches of one
    device look like a meter swap), its meter's monthly peak rising with them."""
    hours = (start - REGISTER_EPOCH).total_seconds() / 3600
    kwh = 10_000.0 + 6 * hours
    out = []
    for i in range(count):
        kwh += (0.5 + ((i * 7 + seed * 13) % 11) / 2) * step_s / 3600
        out.append(
            sample(
                start + timedelta(seconds=i * step_s),
                energy_import_kwh=round(kwh, 3),
                monthly_power_peak_w=4000.0 + (i * 37 + seed * 101) % 900,
            )
        )
    return out


def derived(device_pk: int) -> tuple[list[tuple], ...]:
    """Everything the steps derive for a device: quarters, months, register breaks."""
    return (
        device_rows(
            device_pk,
            "bucket, kw, coverage, sample_count, first_ts, last_ts",
            "capacity_quarter",
            "bucket",
        ),
        device_rows(
            device_pk,
            "month_start, month_end, peak_kw, peak_bucket, quarters_with_data, "
            "complete_quarters, meter_peak_w, meter_peak_bucket, meter_peak_ts",
            "capacity_month",
            "month_start",
        ),
        device_rows(
            device_pk,
            "ts, prev_ts, import_kwh, prev_import_kwh, kind",
            "telemetry_registerbreak",
            "ts",
        ),
    )


def test_one_run_over_many_devices_derives_for_each_what_a_rebuild_of_it_derives(owner):
    """Every step is one statement for the chunk's devices: spans of many devices, several
    per device (a month's edge, quarters shared through their neighbours, two in one
    month, last winter's backlog, a meter swap), two zones, in one run, then more."""
    brussels_november = datetime(2026, 10, 31, 22, 50, tzinfo=UTC)  # local month edge
    devices = [
        Device.objects.create(
            device_id=f"home-{n}", owner=owner, timezone="UTC" if n % 4 == 3 else "Europe/Brussels"
        )
        for n in range(8)
    ]
    first_batches = {
        0: [readings(WEDNESDAY, 30, 0)],
        1: [readings(WEDNESDAY, 30, 1), readings(datetime(2026, 2, 10, tzinfo=UTC), 40, 1)],
        # 40 minutes apart: two spans, each recomputing the other's edge quarter.
        2: [readings(WEDNESDAY, 30, 2), readings(WEDNESDAY + timedelta(minutes=45), 30, 2)],
        3: [readings(brussels_november, 120, 3)],
        4: [readings(brussels_november, 120, 4)],
        5: [readings(WEDNESDAY, 20, 5), readings(WEDNESDAY + timedelta(days=16), 20, 5)],
        6: [readings(WEDNESDAY, 90, 6)],
        7: [readings(WEDNESDAY - timedelta(days=1), 30, 7), readings(WEDNESDAY, 30, 7)],
    }
    swapped = readings(WEDNESDAY + timedelta(minutes=20), 12, 6)
    for r in swapped[6:]:
        r["energy_import_kwh"] = round(r["energy_import_kwh"] - 9_990.0, 3)  # a new meter
    later_batches = {
        0: [readings(WEDNESDAY + timedelta(minutes=5), 30, 0)],  # the running quarter again
        4: [readings(brussels_november - timedelta(hours=2), 30, 4)],  # before, in October
        6: [swapped],
        7: [readings(WEDNESDAY + timedelta(minutes=3), 12, 7)],
    }
    for batches in (first_batches, later_batches):
        for n, samples_of in batches.items():
            for samples in samples_of:
                store(devices[n], samples)
        run = pipeline.run_owed_steps(chunk=100)
        assert run.failed_devices == 0

    assert derived(devices[6].pk)[2], "the meter swap was not recorded"
    assert len(derived(devices[4].pk)[1]) == 2, "October and November, in Brussels"
    assert len(derived(devices[3].pk)[1]) == 1, "October only, in UTC"
    for d in devices:
        found = derived(d.pk)
        rebuild(d.pk)
        assert derived(d.pk) == found, d.device_id


def test_the_steps_of_ten_devices_take_as_many_statements_as_those_of_one(owner):
    if plan_for().name == "timescale":
        pytest.skip("TimescaleDB refreshes each old span's aggregate window: a statement each")
    statements: list[str] = []

    def counted(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    counts = []
    for households in (1, 10):
        for n in range(households):
            device = Device.objects.create(device_id=f"home-{households}-{n}", owner=owner)
            store(device, readings(WEDNESDAY, 30, n))
        statements.clear()
        with connection.execute_wrapper(counted):
            pipeline.run_owed_steps(chunk=100)
        counts.append(len(statements))
    assert counts[0] == counts[1], counts
