"""The storage plans keep the same promises: each test here runs on the plan of the
pass's database (SQLite in the SQLite pass, PostgreSQL tables in the PostgreSQL pass,
TimescaleDB in a pass whose DATABASE_URL is TIMESCALE_DATABASE_URL; scripts/test.sh
runs that one when the variable is set). The 15-minute and hourly rollups equal
aggregates of the raw samples, however the samples arrived: out of order, in
overlapping retried batches, late."""

from __future__ import annotations

import os
import random
from collections import defaultdict
from datetime import timedelta

import pytest
from django.utils import timezone

from telemetry.models import HourRollup, PendingBatch, QuarterRollup, RegisterBreak, Sample
from telemetry.pipeline import ingest_batch
from telemetry.storage import plan_for
from telemetry.storage.rollups import (
    MAX_RUN_BUCKETS,
    ROLLUP_COLUMNS,
    SAMPLE_INPUT_COLUMNS,
    aggregate_bucket,
    bucket_runs,
)
from telemetry.timegrid import HOUR, QUARTER, bucket_start
from telemetry.validation import validate_samples
from tests.samples import BASE_TS, meter_swap, sample

pytestmark = pytest.mark.django_db(transaction=True)

TIMESCALE_URL = os.environ.get("TIMESCALE_DATABASE_URL", "")


def _pass_plan() -> str:
    """The plan this pass's database must have, from the environment alone."""
    url = os.environ.get("DATABASE_URL", "")
    if not url or url.startswith("sqlite"):
        return "sqlite"
    if TIMESCALE_URL and url == TIMESCALE_URL and os.environ.get("TIMESCALEDB") != "off":
        return "timescale"
    return "postgres-tables"


_WHERE = {
    "sqlite": "the SQLite pass runs it (scripts/test.sh)",
    "postgres-tables": "the PostgreSQL pass runs it (scripts/test.sh)",
    "timescale": (
        "runs in a pass with DATABASE_URL=$TIMESCALE_DATABASE_URL (scripts/test.sh)"
        if TIMESCALE_URL
        else "TIMESCALE_DATABASE_URL is not set: no PostgreSQL with timescaledb preloaded here"
    ),
}
PLANS = [
    pytest.param(
        name,
        id=name,
        marks=pytest.mark.skipif(name != _pass_plan(), reason=f"{name} plan: {_WHERE[name]}"),
    )
    for name in ("sqlite", "postgres-tables", "timescale")
]


@pytest.fixture(params=PLANS)
def plan(request):
    """The plan under test; the database chose it by itself."""
    chosen = plan_for()
    assert chosen.name == request.param
    return chosen


def ingest(device, samples) -> int:
    """As a request without a worker stores a batch: with the steps it owes, among them
    (on TimescaleDB) the refresh of aggregates older than their watermark."""
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors, errors
    return ingest_batch(device, columns)


def stream(rng: random.Random, count: int) -> list[dict]:
    """Jittered 1-10 s sampling with gaps, export bursts and optional meter fields
    (the export register among them)."""
    samples, ts, imported, exported = [], BASE_TS, 1000.0, 50.0
    for _ in range(count):
        ts += timedelta(seconds=rng.choice([1, 2, 2, 3, 10]) + rng.random())
        if rng.random() < 0.01:
            ts += timedelta(minutes=rng.randint(5, 40))  # the edge was offline
        power = rng.uniform(-3000, 6000)
        imported += max(power, 0) / 3.6e6 * 2
        exported += max(-power, 0) / 3.6e6 * 2
        s = sample(ts, power_w=power, energy_import_kwh=imported, energy_export_kwh=exported)
        if rng.random() < 0.3:
            s["average_power_15m_w"] = None
        if rng.random() < 0.2:
            s["energy_export_kwh"] = None  # a meter without export registers
        if rng.random() < 0.3:
            s["monthly_power_peak_w"] = rng.uniform(2000, 9000)
        samples.append(s)
    return samples


def expected_rollups(device, width: timedelta) -> dict:
    raw = Sample.objects.filter(device=device).order_by("ts").values_list(*SAMPLE_INPUT_COLUMNS)
    buckets: dict = defaultdict(list)
    for row in raw:
        buckets[bucket_start(row[0], width)].append(row)
    return {b: aggregate_bucket(device.pk, b, rows) for b, rows in buckets.items()}


def stored_rollups(model, device) -> dict:
    rows = model.objects.filter(device_id=device.pk).values_list(*ROLLUP_COLUMNS)
    return {row[1]: list(row) for row in rows}


def assert_rollups_match(device) -> None:
    for model, width in ((QuarterRollup, QUARTER), (HourRollup, HOUR)):
        expected, stored = expected_rollups(device, width), stored_rollups(model, device)
        assert stored.keys() == expected.keys(), model.__name__
        for bucket, row in expected.items():
            for name, got, want in zip(ROLLUP_COLUMNS, stored[bucket], row, strict=True):
                if isinstance(want, float):
                    got = pytest.approx(got, rel=1e-9, abs=1e-9)
                assert got == want, (model.__name__, bucket, name)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rollups_match_raw_samples_after_shuffled_overlapping_batches(plan, device, seed):
    rng = random.Random(seed)
    samples = stream(rng, 1500)
    batches = []
    i = 0
    while i < len(samples):
        size = rng.randint(1, 200)
        batches.append(samples[i : i + size])
        if rng.random() < 0.3:
            batches.append(samples[max(0, i - 50) : i + size])  # a retried, overlapping batch
        i += size
    rng.shuffle(batches)  # late and out-of-order arrival
    inserted = sum(ingest(device, batch) for batch in batches)
    assert inserted == len(samples)
    assert_rollups_match(device)


def test_late_sample_moves_the_first_value_of_its_quarter(plan, device):
    ingest(device, [sample(BASE_TS + timedelta(minutes=5))])
    ingest(device, [sample(BASE_TS + timedelta(minutes=1), energy_import_kwh=1.0)])
    quarter = QuarterRollup.objects.get(device_id=device.pk, bucket=BASE_TS)
    assert quarter.first_ts == BASE_TS + timedelta(minutes=1)
    assert quarter.first_import_kwh == 1.0
    assert quarter.sample_count == 2
    assert_rollups_match(device)


def test_duplicate_samples_are_not_counted_twice(plan, device):
    batch = [sample(BASE_TS + timedelta(seconds=i)) for i in range(10)]
    ingest(device, batch)
    ingest(device, batch)
    assert QuarterRollup.objects.get(device_id=device.pk).sample_count == 10
    assert HourRollup.objects.get(device_id=device.pk).sample_count == 10


def test_consecutive_buckets_form_runs_split_at_gaps_and_at_the_run_limit():
    q = [BASE_TS + QUARTER * n for n in (0, 1, 2, 5, 6)]
    assert bucket_runs(reversed(q), QUARTER) == [
        (BASE_TS, BASE_TS + QUARTER * 3),
        (BASE_TS + QUARTER * 5, BASE_TS + QUARTER * 7),
    ]
    long = [BASE_TS + QUARTER * n for n in range(MAX_RUN_BUCKETS + 1)]
    assert bucket_runs(long, QUARTER) == [
        (BASE_TS, BASE_TS + QUARTER * MAX_RUN_BUCKETS),
        (BASE_TS + QUARTER * MAX_RUN_BUCKETS, BASE_TS + QUARTER * (MAX_RUN_BUCKETS + 1)),
    ]


def test_a_long_backlog_batch_is_refreshed_in_runs_not_bucket_by_bucket(
    plan, device, other_device, django_assert_max_num_queries
):
    if plan.name != "sqlite":
        pytest.skip(
            "the recomputing refresh is SQLite's; PostgreSQL merges in the insert, "
            "TimescaleDB aggregates continuously"
        )
    # The neighbour's rollups in the same hours must survive the range deletes.
    ingest(other_device, [sample(BASE_TS + timedelta(hours=h)) for h in range(0, 24 * 14, 7)])
    neighbour = expected_rollups(other_device, QUARTER)
    # 14 days every 30 s with a 3-hour gap: 1,340 quarters and 335 hours touched.
    samples = [
        sample(BASE_TS + timedelta(seconds=30 * i), energy_import_kwh=1000 + i / 1000)
        for i in range(14 * 2880)
        if not 1000 <= i < 1360
    ]
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors
    # Bucket by bucket this was over 5,000 statements.
    with django_assert_max_num_queries(150):
        plan_for().insert_batch(device.pk, columns)
    assert_rollups_match(device)
    assert_rollups_match(other_device)
    assert stored_rollups(QuarterRollup, other_device).keys() == neighbour.keys()


def test_counts_only_rows_that_were_new(plan, device):
    first = [sample(BASE_TS + timedelta(seconds=i)) for i in range(10)]
    overlapping = [sample(BASE_TS + timedelta(seconds=i)) for i in range(5, 25)]
    assert ingest(device, first) == 10
    assert ingest(device, overlapping) == 15
    assert ingest(device, overlapping) == 0
    assert Sample.objects.filter(device=device).count() == 25
    assert_rollups_match(device)


def test_a_meter_without_export_registers_has_no_export_in_its_rollups(plan, device):
    # The first quarter only without export; the second starts with export and ends
    # without it.
    no_export = [
        sample(BASE_TS + timedelta(seconds=10 * i), energy_export_kwh=None) for i in range(5)
    ]
    mixed = [
        sample(QUARTER + BASE_TS + timedelta(seconds=10 * i), energy_export_kwh=e)
        for i, e in enumerate([7.0, 7.5, None])
    ]
    ingest(device, mixed + no_export)
    first = QuarterRollup.objects.get(device_id=device.pk, bucket=BASE_TS)
    second = QuarterRollup.objects.get(device_id=device.pk, bucket=BASE_TS + QUARTER)
    assert (first.first_export_kwh, first.last_export_kwh) == (None, None)
    assert (second.first_export_kwh, second.last_export_kwh) == (7.0, None)
    hour = HourRollup.objects.get(device_id=device.pk, bucket=BASE_TS)
    assert (hour.first_export_kwh, hour.last_export_kwh) == (None, None)
    assert_rollups_match(device)


def test_a_stored_batch_records_its_span_as_owed_in_the_same_commit(plan, device):
    samples = meter_swap()
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors
    assert plan_for().insert_batch(device.pk, columns) == len(samples)
    (owed,) = PendingBatch.objects.filter(device=device)
    assert (owed.oldest, owed.newest, owed.inserted) == (
        BASE_TS,
        BASE_TS + timedelta(minutes=5, seconds=50),
        len(samples),
    )
    # A retry inserts nothing and owes nothing.
    assert plan_for().insert_batch(device.pk, columns) == 0
    assert PendingBatch.objects.filter(device=device).count() == 1


def test_a_meter_swap_is_recorded_as_a_register_break_with_the_batch(plan, device):
    samples = meter_swap()
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors
    assert ingest_batch(device, columns) == len(samples)
    (found,) = RegisterBreak.objects.filter(device=device)
    assert found.prev_ts == BASE_TS + timedelta(seconds=50)
    assert found.ts == BASE_TS + timedelta(minutes=5)
    assert found.export_kwh is None
    # The owed work is done and its record gone with it.
    assert not PendingBatch.objects.filter(device=device).exists()
    assert ingest_batch(device, columns) == 0
    assert RegisterBreak.objects.filter(device=device).count() == 1


def _materialization_tables(cursor) -> list[str]:
    cursor.execute(
        "SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)"
        " FROM timescaledb_information.continuous_aggregates"
        " WHERE view_name IN ('telemetry_quarter', 'telemetry_hour')"
    )
    return [row[0] for row in cursor.fetchall()]


@pytest.mark.parametrize("plan", [p for p in PLANS if p.id == "timescale"], indirect=True)
def test_a_backlog_whose_aggregate_refresh_fails_stays_owed_until_a_run_can_refresh(
    plan, device, other_device
):
    """A backlog's aggregates are refreshed before its steps read them. When the refresh
    fails (here: a real lock on the aggregates' tables that lets reads through and holds
    writes back), neither device's work is done on stale aggregates and both stay owed;
    the next run, with the lock gone, does it and leaves the rollups equal to the raw
    samples."""
    import psycopg
    from django.db import connection

    from telemetry.pipeline import run_owed_steps

    for owner in (device, other_device):
        columns, errors = validate_samples(stream(random.Random(owner.pk), 300), now=timezone.now())
        assert not errors
        assert plan.insert_batch(owner.pk, columns) == 300
    db = connection.settings_dict
    dsn = {"dbname": db["NAME"], "user": db["USER"], "host": db["HOST"], "port": db["PORT"]}
    with psycopg.connect(**{k: v for k, v in dsn.items() if v}) as holder:
        with holder.cursor() as cursor:
            for table in _materialization_tables(cursor):
                # SHARE: reads go on, the refresh's writes wait.
                cursor.execute(f"LOCK TABLE {table} IN SHARE MODE")
            with connection.cursor() as ours:
                ours.execute("SET lock_timeout = '200ms'")
            try:
                run = run_owed_steps()
            finally:
                with connection.cursor() as ours:
                    ours.execute("RESET lock_timeout")
        holder.rollback()
    assert (run.devices, run.failed_devices) == (2, 2)
    assert PendingBatch.objects.count() == 2

    run = run_owed_steps()
    assert (run.devices, run.failed_devices) == (2, 0)
    assert not PendingBatch.objects.exists()
    assert_rollups_match(device)
    assert_rollups_match(other_device)


@pytest.mark.parametrize("plan", [p for p in PLANS if p.id == "timescale"], indirect=True)
def test_live_samples_right_after_a_bulk_load_ending_now_are_read_at_once(
    plan, device, other_device
):
    """A bulk load (the demo's history) ending now refreshes its aggregates' window; the
    running quarter and hour stay out of it, or every device's next samples in them
    would sit below the watermark, unread until the policy's next run."""
    now = timezone.now().replace(microsecond=0)
    history = [
        sample(now - timedelta(minutes=50) + timedelta(seconds=10 * i), energy_import_kwh=1 + i)
        for i in range(300)
    ]
    columns, errors = validate_samples(history, now=now + timedelta(seconds=1))
    assert not errors, errors[:2]
    assert plan.insert_history(device.pk, columns) == 300
    # The other household's first readings, a moment later, as its edge posts them.
    live = [sample(now + timedelta(seconds=2 * i), energy_import_kwh=5 + i) for i in range(2)]
    ingest(other_device, live)
    assert_rollups_match(other_device)
    assert_rollups_match(device)
