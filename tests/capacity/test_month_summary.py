"""capacity_month keeps each month's quarter counts and the meter's running peak as
batches arrive, in any order, so that a month answer reads a dozen rows and not a year
of quarters and hours. What it keeps must equal what the quarters and hours say."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.utils import timezone

from capacity.materialize import rebuild
from capacity.rules import COMPLETE_COVERAGE
from telemetry import pipeline
from telemetry.storage import plan_for
from telemetry.validation import validate_samples
from tests.samples import sample

pytestmark = pytest.mark.django_db(transaction=True)

BRUSSELS = ZoneInfo("Europe/Brussels")
# Local 31 March 20:00 to 1 April 04:00: a month boundary inside the run.
START = datetime(2026, 3, 31, 20, 0, tzinfo=BRUSSELS).astimezone(UTC)
HOURS = 8
STEP_S = 10


def readings(rng: random.Random) -> list[dict]:
    """A household's readings: power that changes every quarter (so the quarters'
    peaks differ), two gaps that leave quarters incomplete, and the meter's running
    monthly peak that rises in steps, holds for hours (ties) and starts again on the
    1st."""
    found = []
    kwh, meter_peak = 10_000.0, 2_000.0
    gaps = [(START + timedelta(minutes=95), 40), (START + timedelta(hours=5, minutes=3), 22)]
    quarter_power = 0.0
    for i in range(HOURS * 3600 // STEP_S):
        ts = START + timedelta(seconds=i * STEP_S)
        if ts.minute % 15 == 0 and ts.second == 0:
            quarter_power = rng.uniform(200, 6_000)
        kwh += quarter_power * STEP_S / 3_600_000
        local = ts.astimezone(BRUSSELS)
        if local.day == 1 and local.hour == 0 and local.minute == 0 and local.second == 0:
            meter_peak = 1_500.0
        if rng.random() < 0.002:
            meter_peak += rng.choice([0.0, 250.0, 731.5])
        if any(gap <= ts < gap + timedelta(minutes=minutes) for gap, minutes in gaps):
            continue
        found.append(
            sample(
                ts,
                power_w=round(quarter_power, 1),
                energy_import_kwh=round(kwh, 4),
                monthly_power_peak_w=meter_peak,
                monthly_power_peak_ts=ts.replace(second=0).isoformat(),
            )
        )
    return found


def ingest_in_batches(device, samples: list[dict], rng: random.Random) -> None:
    batches, i = [], 0
    while i < len(samples):
        size = rng.choice([5, 30, 360, 900])
        batches.append(samples[i : i + size])
        i += size
    rng.shuffle(batches)
    for batch in batches:
        columns, errors = validate_samples(batch, now=timezone.now())
        assert not errors
        pipeline.ingest_batch(device, columns)


def _rows(cursor) -> list[tuple]:
    """Timestamps aware on every backend (SQLite's raw SQL hands back naive ones)."""
    convert = plan_for().to_datetime
    return [
        (
            convert(start),
            with_data,
            complete,
            meter_w,
            None if bucket is None else convert(bucket),
            None if ts is None else convert(ts),
        )
        for start, with_data, complete, meter_w, bucket, ts in cursor.fetchall()
    ]


def kept(device_pk: int) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT month_start, quarters_with_data, complete_quarters, meter_peak_w,"
            " meter_peak_bucket,"
            " meter_peak_ts FROM capacity_month WHERE device_id = %s ORDER BY month_start",
            [device_pk],
        )
        return _rows(cursor)


def counted_from_the_quarters_and_hours(device_pk: int) -> list[tuple]:
    """The same figures by their definition, over each whole month."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT m.month_start,"
            " (SELECT count(*) FROM capacity_quarter q WHERE q.device_id = m.device_id"
            "   AND q.bucket >= m.month_start AND q.bucket < m.month_end),"
            " (SELECT count(*) FROM capacity_quarter q WHERE q.device_id = m.device_id"
            "   AND q.bucket >= m.month_start AND q.bucket < m.month_end"
            "  AND q.coverage >= %s),"
            " h.meter_peak_w, h.bucket, h.meter_peak_ts"
            " FROM capacity_month m LEFT JOIN telemetry_hour h ON h.device_id = m.device_id"
            "  AND h.bucket = (SELECT h2.bucket FROM telemetry_hour h2"
            "    WHERE h2.device_id = m.device_id AND h2.bucket >= m.month_start"
            "    AND h2.bucket < m.month_end AND h2.meter_peak_w IS NOT NULL"
            "    ORDER BY h2.meter_peak_w DESC, h2.bucket DESC LIMIT 1)"
            " WHERE m.device_id = %s ORDER BY m.month_start",
            [COMPLETE_COVERAGE, device_pk],
        )
        return _rows(cursor)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_months_keep_their_quarter_counts_and_meter_peak_whatever_the_order(device, seed):
    rng = random.Random(seed)
    device.timezone = "Europe/Brussels"
    device.save()
    ingest_in_batches(device, readings(rng), rng)

    found = kept(device.pk)
    assert [row[0] for row in found] == [
        datetime(2026, 3, 1, tzinfo=BRUSSELS).astimezone(UTC),
        datetime(2026, 4, 1, tzinfo=BRUSSELS).astimezone(UTC),
    ]
    assert found == counted_from_the_quarters_and_hours(device.pk)
    # The gaps left quarters incomplete, and the rest counted: both months have some.
    march, april = found
    assert 0 < march[2] < 16 and 0 < april[2] < 16
    assert march[1] > march[2] and april[1] > april[2]
    assert march[3] != april[3]
    rebuild(device.pk)
    assert kept(device.pk) == found


def test_a_month_answer_shows_the_kept_coverage_and_meter_peak(device, client, read_token):
    rng = random.Random(7)
    device.timezone = "Europe/Brussels"
    device.save()
    ingest_in_batches(device, readings(rng), rng)
    march, april = kept(device.pk)
    _, march_with_data, march_complete, march_meter_w, _, _ = march
    april_complete = april[2]

    answer = client.get(
        "/v1/capacity/month/2026-03", HTTP_AUTHORIZATION=f"Bearer {read_token}"
    ).json()
    assert answer["meter_reported_peak"]["kw"] == pytest.approx(march_meter_w / 1000, abs=1e-3)
    assert answer["completeness"]["quarters_complete"] == march_complete
    assert answer["completeness"]["quarters_with_data"] == march_with_data
    months = client.get(
        "/v1/capacity/months?count=2&end=2026-04", HTTP_AUTHORIZATION=f"Bearer {read_token}"
    ).json()
    coverage = {row["month"]: row["provenance"]["coverage"] for row in months["months"]}
    march_quarters = 31 * 96 - 4  # the spring change: one hour less
    assert coverage["2026-03"] == pytest.approx(march_complete / march_quarters, abs=1e-3)
    assert coverage["2026-04"] == pytest.approx(april_complete / (30 * 96), abs=1e-3)
