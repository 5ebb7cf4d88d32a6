"""The SQL path over the rollups agrees with the raw-sample reference of the rules."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from capacity import queries
from capacity.rules import Month
from telemetry.pipeline import ingest_batch
from telemetry.validation import validate_samples
from tests.capacity import reference
from tests.samples import sample

pytestmark = pytest.mark.django_db(transaction=True)

BRUSSELS = ZoneInfo("Europe/Brussels")
START = datetime(2026, 2, 28, 23, tzinfo=UTC)  # 1 March, midnight in Brussels


def ingest(device, samples: list[dict]) -> None:
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors, errors[:3]
    ingest_batch(device, columns)


def generated_stream(rng: random.Random, hours: int) -> list[dict]:
    """Jittered sampling with gaps and export bursts (export never lowers a quarter)."""
    samples, ts, imported = [], START + timedelta(seconds=rng.random() * 30), 500.0
    end = START + timedelta(hours=hours)
    while ts < end:
        step = rng.choice([1, 2, 5, 10, 30]) + rng.random()
        if rng.random() < 0.004:
            step += rng.uniform(300, 3600)  # the edge was offline
        ts += timedelta(seconds=step)
        power = rng.choice([rng.uniform(100, 9000), -rng.uniform(0, 4000)])
        imported += max(power, 0) * step / 3.6e6
        samples.append(sample(ts, power_w=power, energy_import_kwh=imported))
    return samples


def as_pairs(samples: list[dict]) -> list[tuple[datetime, float]]:
    pairs = [(datetime.fromisoformat(s["ts"]), s["energy_import_kwh"]) for s in samples]
    return sorted(pairs)


@pytest.mark.parametrize("seed", [11, 12])
def test_quarter_power_matches_the_reference(device, seed):
    rng = random.Random(seed)
    samples = generated_stream(rng, hours=12)
    # Overlapping batches (a retried upload) that together hold every sample.
    batches = [samples[i : i + rng.randint(200, 400)] for i in range(0, len(samples), 200)]
    rng.shuffle(batches)
    for batch in batches:
        ingest(device, batch)
    pairs = as_pairs(samples)
    window_start, window_end = START + timedelta(hours=1), START + timedelta(hours=11)
    got = {q.start: q for q in queries.quarter_powers(device.pk, window_start, window_end)}
    for start in [window_start + i * reference.QUARTER for i in range(40)]:
        want = reference.quarter_kw(pairs, start)
        if want is None:
            assert start not in got
            continue
        q = got[start]
        assert q.kw == pytest.approx(want["kw"], rel=1e-6, abs=1e-6), start
        assert q.coverage == pytest.approx(want["coverage"], abs=1e-6), start
        assert q.sample_count == want["sample_count"]
    # The stored monthly peak survived every out-of-order recomputation.
    march = Month(2026, 3)
    (stored,) = queries.month_peaks(device.pk, [(march, *march.bounds(BRUSSELS))])
    assert stored.peak_kw == pytest.approx(reference.month_peak(pairs, *march.bounds(BRUSSELS)))


def test_peaks_match_the_reference(device):
    rng = random.Random(5)
    samples = generated_stream(rng, hours=30)
    ingest(device, samples)
    pairs = as_pairs(samples)
    first, middle, last = START, START + timedelta(hours=15), START + timedelta(hours=30)
    assert queries.peak_between(device.pk, first, middle) == pytest.approx(
        reference.month_peak(pairs, first, middle)
    )
    assert queries.peak_between(device.pk, middle, last) == pytest.approx(
        reference.month_peak(pairs, middle, last)
    )
    march = Month(2026, 3)
    (stored,) = queries.month_peaks(device.pk, [(march, *march.bounds(BRUSSELS))])
    assert stored.peak_kw == pytest.approx(reference.month_peak(pairs, *march.bounds(BRUSSELS)))


def test_changing_the_time_zone_moves_month_boundaries(device):
    # 1 March 00:30 in Brussels is still February in London.
    ingest(device, [sample(START + timedelta(minutes=30, seconds=s)) for s in range(0, 900, 10)])
    feb, mar = Month(2026, 2), Month(2026, 3)
    assert queries.month_peaks(device.pk, [(mar, *mar.bounds(BRUSSELS))])[0].peak_kw
    device.timezone = "Europe/London"
    device.save()
    london = ZoneInfo("Europe/London")
    assert queries.month_peaks(device.pk, [(feb, *feb.bounds(london))])[0].peak_kw
    assert queries.month_peaks(device.pk, [(mar, *mar.bounds(london))])[0].peak_kw is None


def test_month_without_data_has_no_peak(device):
    march = Month(2026, 3)
    peaks = queries.month_peaks(device.pk, [(march, *march.bounds(BRUSSELS))])
    assert peaks[0].peak_kw is None
    assert peaks[0].billed_kw == 2.5
    assert peaks[0].missing


def swapped_stream(rng: random.Random, hours: int) -> list[dict]:
    """generated_stream with meter swaps: registers restart low, or jump to another
    meter's, sometimes inside a quarter and sometimes across an offline gap."""
    samples = generated_stream(rng, hours)
    offset = 0.0
    for i, s in enumerate(samples):
        if i and rng.random() < 0.004:
            new_start = rng.choice([rng.uniform(0, 5), rng.uniform(20000, 40000)])
            offset = new_start - s["energy_import_kwh"]
        s["energy_import_kwh"] += offset
    return samples


@pytest.mark.parametrize("seed", [21, 22])
def test_quarter_power_over_meter_swaps_matches_the_segment_reference(device, seed):
    rng = random.Random(seed)
    samples = swapped_stream(rng, hours=12)
    batches = [samples[i : i + rng.randint(200, 400)] for i in range(0, len(samples), 200)]
    rng.shuffle(batches)
    for batch in batches:
        ingest(device, batch)
    pairs = as_pairs(samples)
    assert len(reference.split_segments(pairs)) >= 4
    got = {
        q.start: q for q in queries.quarter_powers(device.pk, START, START + timedelta(hours=12))
    }
    for start in [START + i * reference.QUARTER for i in range(48)]:
        want = reference.segmented_quarter_kw(pairs, start)
        if want is None:
            assert start not in got
            continue
        q = got[start]
        assert q.kw == pytest.approx(want["kw"], rel=1e-6, abs=1e-6), start
        assert q.coverage == pytest.approx(want["coverage"], abs=1e-6), start
    march = Month(2026, 3)
    (stored,) = queries.month_peaks(device.pk, [(march, *march.bounds(BRUSSELS))])
    peaks = [reference.segmented_quarter_kw(pairs, s) for s in rules_quarters(march)]
    assert stored.peak_kw == pytest.approx(max(p["kw"] for p in peaks if p is not None))


def rules_quarters(month: Month) -> list[datetime]:
    from capacity.rules import quarter_starts

    return quarter_starts(*month.bounds(BRUSSELS))
