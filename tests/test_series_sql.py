"""The series computed in SQL (issue 17, point 1) answers what the Python over ORM rows
answered (tests/series_reference.py, the code it replaced), bucket for bucket.

The history is built to reach every rule: both DST changes of 2026 in Brussels, a day
without samples, a meter swap (a register break), a stretch without export registers,
ranges that start and end inside gaps, before and after all samples. Each storage plan
runs it in its own pass.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from telemetry.models import RegisterBreak
from telemetry.pipeline import ingest_batch
from telemetry.series import (
    INTERVALS,
    SeriesRangeError,
    local_texts,
    outer_bounds,
    period_starts,
    series,
)
from telemetry.validation import validate_samples
from tests import series_reference
from tests.samples import sample

pytestmark = pytest.mark.django_db

BRUSSELS = ZoneInfo("Europe/Brussels")
STEP = timedelta(minutes=4)


def household(first: datetime, until: datetime, register: float, export: bool) -> list[dict]:
    """Readings every 4 minutes with a daily curve; export registers when ``export``."""
    out, ts = [], first.astimezone(UTC)  # steps of real time, not of the wall clock
    while ts < until:
        hour = ts.astimezone(BRUSSELS).hour
        kw = 0.4 + (2.6 if 17 <= hour < 20 else 0.0) + 0.1 * (ts.minute % 7)
        out.append(
            sample(
                ts,
                power_w=kw * 1000,
                energy_import_kwh=register,
                energy_export_kwh=1500.0 + (ts - first).days * 0.5 if export else None,
            )
        )
        register += kw * STEP.total_seconds() / 3600
        ts += STEP
    return out


def store(device, samples: list[dict]) -> None:
    for i in range(0, len(samples), 2000):
        columns, errors = validate_samples(samples[i : i + 2000], now=timezone.now())
        assert not errors
        ingest_batch(device, columns)


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BRUSSELS)


RANGES = [
    ("2026-03-20", "2026-04-06"),  # all of spring, across the swap and the gap
    ("2026-03-29", "2026-03-30"),  # the day with 23 hours
    ("2026-03-24T13:00:00", "2026-03-26T09:30:00"),  # starts and ends inside the gap
    ("2026-04-02", "2026-04-03"),  # no export registers
    ("2026-10-24", "2026-10-27"),  # the day with 25 hours
    ("2026-02-01", "2026-03-20T06:00:00"),  # nothing before, first samples at the end
    ("2026-10-26T12:00:00", "2026-12-01"),  # after the last sample
    ("2026-05-01", "2026-06-01"),  # between two stretches: no bucket
    ("2026-01-01", "2027-01-01"),  # the whole year
]


def test_every_interval_answers_what_the_python_reference_answers(device):
    spring = household(moment("2026-03-20"), moment("2026-03-24T12:00:00"), 900.0, True)
    spring += household(moment("2026-03-26"), moment("2026-04-01"), 1000.0, True)
    # The grid operator's new meter: registers restart near zero, and it has no export.
    spring += household(moment("2026-04-01T10:00:00"), moment("2026-04-04"), 0.5, False)
    autumn = household(moment("2026-10-24"), moment("2026-10-26T12:00:00"), 5000.0, True)
    store(device, spring)
    store(device, autumn)
    assert RegisterBreak.objects.filter(device=device).count() == 2  # the swap, and autumn

    compared = 0
    for interval in INTERVALS:
        for start, end in RANGES:
            if interval == "15m" and start == "2026-01-01":
                continue  # more than MAX_POINTS buckets
            args = (device.pk, interval, moment(start), moment(end), BRUSSELS)
            got, want = series(*args), series_reference.series(*args)
            assert [b["start"] for b in got] == [b["start"] for b in want], (interval, start)
            for mine, theirs in zip(got, want, strict=True):
                for key in ("import_kwh", "export_kwh"):
                    # The boundary's interpolation runs in SQL floats, the reference's
                    # in timedelta ratios: the last of six decimals may differ.
                    if theirs[key] is None:
                        assert mine[key] is None, (interval, start, mine)
                    else:
                        assert mine[key] == pytest.approx(theirs[key], abs=2e-6)
                rest = {k: v for k, v in mine.items() if k not in ("import_kwh", "export_kwh")}
                assert rest == {k: theirs[k] for k in rest}, (interval, start)
                compared += 1
    assert compared > 1500


@pytest.mark.parametrize(
    ("day", "hours"), [("2026-03-29", 23), ("2026-10-25", 25), ("2026-10-26", 24)]
)
def test_hour_and_quarter_buckets_follow_utc_through_a_dst_change(day, hours):
    start = moment(day)
    end = moment((datetime.fromisoformat(day) + timedelta(days=1)).date().isoformat())
    hourly = period_starts("1h", start, end, BRUSSELS)
    quarters = period_starts("15m", start, end, BRUSSELS)
    assert len(hourly) - 1 == hours and len(quarters) - 1 == 4 * hours
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(hourly))
    assert hourly[0] == start.astimezone(UTC)


def test_the_cache_key_bounds_are_period_starts_first_and_last():
    import random

    pick = random.Random(17)
    for _ in range(150):
        start = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(minutes=pick.randrange(14_000_000))
        end = start + timedelta(minutes=pick.randrange(1, 8_000_000))
        for interval in INTERVALS:
            try:
                boundaries = period_starts(interval, start, end, BRUSSELS)
            except SeriesRangeError:
                with pytest.raises(SeriesRangeError):
                    outer_bounds(interval, start, end, BRUSSELS)
                continue
            assert outer_bounds(interval, start, end, BRUSSELS) == (boundaries[0], boundaries[-1])


@pytest.mark.parametrize(
    "zone", ["Europe/Brussels", "Australia/Lord_Howe", "Asia/Kathmandu", "America/Santiago"]
)
def test_bucket_starts_are_written_as_astimezone_writes_them(zone):
    import random

    tz = ZoneInfo(zone)
    pick = random.Random(zone)
    moments = sorted(
        datetime(2000, 1, 1, tzinfo=UTC)
        + timedelta(seconds=pick.randrange(3_000_000_000), microseconds=pick.choice([0, 250]))
        for _ in range(3000)
    )
    dense = [datetime(2026, 3, 20, tzinfo=UTC) + i * timedelta(minutes=15) for i in range(10_000)]
    for run in (moments, dense):
        assert local_texts(run, tz) == [m.astimezone(tz).isoformat() for m in run]
