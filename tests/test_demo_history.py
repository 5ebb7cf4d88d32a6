"""The demo's history: 13 plausible months written through the ingest rules.

One 13-month backfill per test module (about 113,000 samples) is shared by the tests
that only read it; the ones that write use short ranges of their own.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from capacity.queries import month_rows
from capacity.rules import Month
from demo import history
from demo.bulkload import insert_history
from telemetry.models import Device, Sample
from telemetry.pipeline import ingest_batch
from telemetry.storage import plan_for

END = datetime(2026, 11, 27, 18, 42, 17, tzinfo=UTC)
BRUSSELS = ZoneInfo("Europe/Brussels")
THIS_MONTH = Month(2026, 11)


def _wipe(device_pk: int) -> None:
    # On TimescaleDB the rollups are continuous aggregates (views): they cannot be
    # deleted from, and a refresh after the samples are gone drops their buckets.
    tables = plan_for().ingest_keeps_rollups
    rollups = ("telemetry_quarter", "telemetry_hour")
    with connection.cursor() as cursor:
        for table in (
            "capacity_month",
            "capacity_quarter",
            *(rollups if tables else ()),
            "telemetry_sample",
        ):
            cursor.execute(f"DELETE FROM {table} WHERE device_id = %s", [device_pk])  # noqa: S608
        if not tables:
            for view in rollups:
                cursor.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", [view])
    Device.objects.filter(pk=device_pk).delete()


@pytest.fixture(scope="module")
def year(django_db_setup, django_db_blocker):
    """13 months of history ending at END, written once for the module."""
    with django_db_blocker.unblock():
        device = Device.objects.create(device_id="demo-history")
        inserted = history.backfill(device, end=END, months=13, seed=3)
        yield device, inserted
        _wipe(device.pk)


def _months() -> list[Month]:
    return [THIS_MONTH.shift(-k) for k in range(13)]


def _peaks(device) -> dict[Month, float]:
    starts = {month: month.bounds(BRUSSELS)[0] for month in _months()}
    rows = month_rows(device.pk, list(starts.values()))
    return {month: rows[start].peak_kw for month, start in starts.items() if start in rows}


@pytest.mark.django_db
def test_every_one_of_thirteen_months_has_a_monthly_peak(year):
    device, inserted = year
    peaks = _peaks(device)
    assert set(peaks) == set(_months())
    # Evening cooking and an EV: every month's peak is a real household's, not a floor.
    assert all(3.0 < kw < 25.0 for kw in peaks.values()), peaks
    assert inserted == Sample.objects.filter(device=device).count() > 100_000


@pytest.mark.django_db
def test_monthly_peaks_differ_from_month_to_month(year):
    peaks = _peaks(year[0])
    assert len({round(kw, 1) for kw in peaks.values()}) >= 8, peaks
    assert max(peaks.values()) - min(peaks.values()) > 1.0, peaks


@pytest.mark.django_db
def test_winter_uses_more_than_summer(year):
    device, _ = year

    def imported(month: Month) -> float:
        start, end = month.bounds(BRUSSELS)
        rows = Sample.objects.filter(device=device, ts__gte=start, ts__lt=end).order_by("ts")
        return rows.last().energy_import_kwh - rows.first().energy_import_kwh

    assert imported(Month(2026, 1)) > 1.3 * imported(Month(2026, 7))


@pytest.mark.django_db
def test_summer_days_export(year):
    device, _ = year
    start, end = Month(2026, 7).bounds(BRUSSELS)
    july = Sample.objects.filter(device=device, ts__gte=start, ts__lt=end).order_by("ts")
    assert july.filter(power_w__lt=-1000).exists()
    assert july.last().energy_export_kwh - july.first().energy_export_kwh > 100


@pytest.mark.django_db
def test_registers_never_go_back_and_totals_are_the_tariff_sums(year):
    rows = list(
        Sample.objects.filter(device=year[0])
        .order_by("ts")
        .values_list(
            "energy_import_kwh",
            "energy_export_kwh",
            "energy_import_t1_kwh",
            "energy_import_t2_kwh",
            "energy_export_t1_kwh",
            "energy_export_t2_kwh",
        )
    )
    for before, after in itertools.pairwise(rows):
        assert all(b <= a for b, a in zip(before, after, strict=True)), (before, after)
    for imp, exp, i1, i2, e1, e2 in rows[:: len(rows) // 50]:
        assert imp == pytest.approx(i1 + i2, abs=0.002)
        assert exp == pytest.approx(e1 + e2, abs=0.002)


@pytest.mark.django_db
def test_every_quarter_of_a_past_month_is_complete(year):
    # March 2026 has the spring DST change: 31 days x 96 quarters - 4.
    start, _ = Month(2026, 3).bounds(BRUSSELS)
    row = month_rows(year[0].pk, [start])[start]
    assert row.quarters_with_data == row.complete_quarters == 31 * 96 - 4


@pytest.mark.django_db
def test_meter_reported_peak_matches_the_computed_one(year):
    device, _ = year
    agreeing = 0
    for month in _months()[1:]:
        start, end = month.bounds(BRUSSELS)
        computed = _peaks(device)[month]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT max(meter_peak_w) FROM telemetry_quarter "
                "WHERE device_id = %s AND bucket >= %s AND bucket < %s",
                [
                    device.pk,
                    connection.ops.adapt_datetimefield_value(start),
                    connection.ops.adapt_datetimefield_value(end),
                ],
            )
            meter_w = cursor.fetchone()[0]
        # The meter resets at midnight on the 1st, before it could report a peak set in
        # the month's very last quarter; otherwise the two agree to its rounding.
        if meter_w == pytest.approx(computed * 1000, abs=0.5):
            agreeing += 1
        else:
            assert meter_w < computed * 1000
    assert agreeing >= 10


def test_same_seed_and_end_give_the_same_history_and_another_seed_another():
    seconds = history.grid(END - timedelta(days=2), END, history.STEP_S)
    first = history.generate(7, seconds, BRUSSELS)
    assert history.generate(7, seconds, BRUSSELS) == first
    assert history.generate(8, seconds, BRUSSELS) != first


def test_grid_steps_that_would_leave_quarters_incomplete_are_refused():
    seconds = history.grid(END - timedelta(days=1), END, 420)
    with pytest.raises(ValueError, match="step_s"):
        history.generate(0, seconds, BRUSSELS)


@pytest.mark.django_db
def test_a_second_backfill_inserts_nothing(device):
    first = history.backfill(device, end=END, months=1, seed=1)
    quarters = list(_quarter_rows(device.pk))
    assert first > 7000
    assert history.backfill(device, end=END, months=1, seed=1) == 0
    assert Sample.objects.filter(device=device).count() == first
    assert list(_quarter_rows(device.pk)) == quarters


@pytest.mark.django_db
def test_history_ends_on_the_live_meter_registers(device):
    at_end = history.Registers(20000.0, 10000.0, 3000.0, 2000.0)
    history.backfill(device, end=END, start=END - timedelta(days=3), at_end=at_end)
    last = Sample.objects.filter(device=device).latest("ts")
    assert history.Registers.of_sample(last).values() == pytest.approx(at_end.values(), abs=0.001)


@pytest.mark.django_db
def test_an_export_register_too_small_for_the_history_still_ends_on_the_live_one(device):
    july = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
    at_end = history.Registers(20000.0, 10000.0, 5.0, 3.0)
    history.backfill(device, end=july, start=july - timedelta(days=7), at_end=at_end)
    rows = Sample.objects.filter(device=device).order_by("ts")
    first, last = rows.first(), rows.last()
    assert history.Registers.of_sample(last).values() == pytest.approx(at_end.values(), abs=0.001)
    assert 0 < first.energy_export_kwh < last.energy_export_kwh
    assert rows.filter(power_w__lt=-1000).exists()


@pytest.mark.django_db
def test_a_gap_fill_runs_from_the_stored_registers_to_the_live_ones(device):
    before = history.Registers(20000.0, 10000.0, 3000.0, 2000.0)
    at_end = history.Registers(20030.0, 10020.0, 3010.0, 2000.0)
    history.backfill(
        device, end=END, start=END - timedelta(days=1), before=before, at_end=at_end, seed=5
    )
    rows = Sample.objects.filter(device=device).order_by("ts")
    first, last = rows.first(), rows.last()
    assert first.energy_import_kwh >= 30000.0
    assert last.energy_import_kwh == pytest.approx(30050.0, abs=0.002)
    assert last.energy_export_kwh == pytest.approx(5010.0, abs=0.002)


@pytest.mark.django_db
def test_bulk_history_stores_the_same_rollups_as_ingest(device, other_device):
    seconds = history.grid(END - timedelta(days=2), END, history.STEP_S)
    columns = history.generate(4, seconds, BRUSSELS)
    # Half through ingest first on both, so the bulk path must merge with stored rows.
    half = [None if c is None else c[: len(c) // 2] for c in columns]
    ingest_batch(device, half)
    ingest_batch(other_device, half)
    assert ingest_batch(device, columns) == len(seconds) - len(half[0])
    assert insert_history(other_device.pk, columns) == (len(seconds) - len(half[0]))
    for table in ("telemetry_quarter", "telemetry_hour"):
        assert _rollup_rows(table, device.pk) == _rollup_rows(table, other_device.pk)


def _quarter_rows(device_pk: int):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT bucket, kw, coverage FROM capacity_quarter WHERE device_id = %s "
            "ORDER BY bucket",
            [device_pk],
        )
        return cursor.fetchall()


def _rollup_rows(table: str, device_pk: int) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT bucket, first_ts, last_ts, first_import_kwh, last_import_kwh, "  # noqa: S608
            "first_export_kwh, last_export_kwh, sample_count, power_sum_w, min_power_w, "
            "max_power_w, meter_avg_15m_w, meter_peak_w, meter_peak_ts "
            f"FROM {table} WHERE device_id = %s ORDER BY bucket",
            [device_pk],
        )
        return [
            tuple(round(v, 6) if isinstance(v, float) else v for v in row)
            for row in cursor.fetchall()
        ]


README = Path(__file__).resolve().parent.parent / "README.md"
QUOTED_COUNTS = re.compile(
    r"between about ([\d,]+) samples \(on\s+the 1st of a month\) and ([\d,]+) \(on its last day\)"
)


def _history_length(end: datetime) -> int:
    """Samples a first demo run at ``end`` writes (bootstrap.ensure_history's range)."""
    start = history.history_start(end, 13, BRUSSELS)
    return len(history.grid(start, end, history.STEP_S))


@pytest.mark.django_db
def test_the_readme_quotes_the_demos_sample_count_as_it_is(year):
    _device, inserted = year
    found = QUOTED_COUNTS.search(" ".join(README.read_text().split()))
    assert found, "the README no longer quotes the demo's sample count"
    fewest, most = (int(n.replace(",", "")) for n in found.groups())
    months = [Month(y, m) for y in range(2026, 2030) for m in range(1, 13)]
    firsts = [_history_length(m.bounds(BRUSSELS)[0]) for m in months]
    lasts = [_history_length(m.bounds(BRUSSELS)[1] - timedelta(seconds=1)) for m in months]
    assert fewest == round(min(firsts), -3)
    assert most == round(max(lasts), -3)
    # The history the demo writes has that length (END is late in November).
    assert inserted == _history_length(END)
    assert fewest <= inserted <= most
