"""Series answers assembled from stored blocks (telemetry.series_blocks, issue 17): equal
to the answer computed whole, whatever is stored; kept exact by the batches that reach
them; never stored from data a batch made stale meanwhile.

Three weeks every five minutes across the spring DST change in Brussels, with a gap of
three days and a meter swap (a register break) after it.
"""

from __future__ import annotations

import io
import random
import threading
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections, transaction
from django.test import TestCase
from django.utils import timezone

from telemetry import series_blocks
from telemetry.models import PendingBatch, SeriesBlock
from telemetry.pipeline import ingest_batch
from telemetry.series import INTERVALS, series_with_dependence
from telemetry.validation import validate_samples
from tests.samples import sample

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 20, tzinfo=UTC)
GAP = (datetime(2026, 4, 2, 6, tzinfo=UTC), datetime(2026, 4, 5, tzinfo=UTC))
SWAP = datetime(2026, 4, 7, 12, tzinfo=UTC)
END = datetime(2026, 4, 10, 9, tzinfo=UTC)
STEP = timedelta(minutes=5)


def readings(first: datetime, last: datetime, register: float) -> list[dict]:
    out = []
    moment = first
    while moment < last:
        minute = moment.hour * 60 + moment.minute
        power = 400.0 + (2600.0 if 17 * 60 <= minute < 20 * 60 else 0.0) + (minute % 7) * 11
        out.append(
            sample(
                moment,
                power_w=power,
                energy_import_kwh=round(register, 4),
                energy_export_kwh=round(50.0 + register / 10, 4),
            )
        )
        register += power / 1000 / 12
        moment += STEP
    return out


def store(device, samples: list[dict], size: int = 2000) -> None:
    """Ingest in batches of ``size``, each with its after-commit work run."""
    for at in range(0, len(samples), size):
        columns, errors = validate_samples(samples[at : at + size], now=timezone.now())
        assert not errors
        with TestCase.captureOnCommitCallbacks(execute=True):
            ingest_batch(device, columns)


@pytest.fixture
def history(device) -> None:
    before_gap = readings(START, GAP[0], 1000.0)
    after_gap = readings(GAP[1], SWAP, before_gap[-1]["energy_import_kwh"] + 30.0)
    # A new meter: its registers start near zero.
    swapped = readings(SWAP, END, 2.0)
    store(device, before_gap)  # no batch spans the gap
    store(device, after_gap + swapped)


def whole(device, interval: str, start: datetime, end: datetime):
    return series_with_dependence(device.pk, interval, start, end, ZoneInfo(device.timezone))


def assembled(device, interval: str, start: datetime, end: datetime):
    body, span = series_blocks.answer(device.pk, interval, start, end, ZoneInfo(device.timezone))
    return orjson.loads(body), span


def ranges() -> list[tuple[str, datetime, datetime]]:
    """Every interval over the whole history and beyond, and random ranges inside it."""
    rng = random.Random(17)
    out = [("15m", START - timedelta(days=2), END + timedelta(days=2))]
    out += [
        (interval, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC))
        for interval in INTERVALS[1:]
    ]
    span_s = int((END - START).total_seconds())
    for _ in range(12):
        interval = rng.choice(INTERVALS)
        first = START - timedelta(days=2) + timedelta(seconds=rng.randrange(span_s))
        length = timedelta(seconds=rng.randrange(3600, span_s))
        out.append((interval, first, first + length))
    return out


def assert_same_answers(device) -> None:
    for interval, start, end in ranges():
        buckets, span = whole(device, interval, start, end)
        got, got_span = assembled(device, interval, start, end)
        assert got == buckets, (interval, start, end)
        # At least the span of the whole computation: a batch that changes the answer
        # drops it.
        assert got_span.first is None or (span.first is not None and got_span.first <= span.first)
        assert got_span.last is None or (span.last is not None and got_span.last >= span.last)


def test_an_answer_from_blocks_equals_the_answer_computed_whole(device, history):
    assert_same_answers(device)  # some blocks stored by the batches, the rest computed
    assert SeriesBlock.objects.filter(device=device).exists()
    SeriesBlock.objects.filter(device=device).delete()
    assert_same_answers(device)  # nothing stored: computed, and stored by the reads
    stored = SeriesBlock.objects.filter(device=device).count()
    assert stored > 21  # at least the days of quarters
    assert_same_answers(device)  # served from what the reads stored
    # Every other block gone: stored and computed pieces side by side.
    ids = list(
        SeriesBlock.objects.filter(device=device).order_by("start").values_list("id", flat=True)
    )
    SeriesBlock.objects.filter(id__in=ids[::2]).delete()
    assert_same_answers(device)
    series_blocks.forget_all(device.pk)
    assert series_blocks.fill_device(device.pk) == stored
    assert_same_answers(device)


def test_batches_store_the_days_that_closed_within_them(device, history):
    days = set(
        SeriesBlock.objects.filter(device=device, interval="15m").values_list("start", flat=True)
    )
    # Every day with a reading in the first half hour of the next one; not the day the
    # gap began (the first reading after it came days later: the first read stores it)
    # nor the last day (no reading after it yet).
    expected = set()
    day = START
    while day < END - timedelta(days=1):
        if not (GAP[0] - timedelta(days=1) < day < GAP[1]):
            expected.add(day)
        day += timedelta(days=1)
    assert days == expected


def test_a_backlog_batch_drops_the_blocks_it_reaches_and_no_other(device, history):
    series_blocks.fill_device(device.pk)
    before = set(SeriesBlock.objects.filter(device=device).values_list("interval", "start"))
    # Half a day into the gap: the blocks either side of it depend on their readings
    # across it; a block of March does not.
    backlog = readings(GAP[0] + timedelta(days=1), GAP[0] + timedelta(days=1, hours=12), 1900.0)
    store(device, backlog)
    after = set(SeriesBlock.objects.filter(device=device).values_list("interval", "start"))
    dropped = before - after
    assert ("15m", datetime(2026, 4, 2, tzinfo=UTC)) in dropped  # the day the gap began
    assert ("15m", datetime(2026, 3, 25, tzinfo=UTC)) in after
    assert all(start < GAP[1] + timedelta(days=28) for _, start in dropped)
    assert_same_answers(device)


def test_a_batch_newer_than_every_reading_drops_no_block(device, history):
    series_blocks.fill_device(device.pk)
    before = set(SeriesBlock.objects.filter(device=device).values_list("interval", "start"))
    store(device, readings(END, END + timedelta(minutes=30), 10.0))
    after = set(SeriesBlock.objects.filter(device=device).values_list("interval", "start"))
    assert before <= after


def test_a_block_computed_before_a_batch_landed_is_not_stored(device, history, monkeypatch):
    SeriesBlock.objects.filter(device=device).delete()
    computing = series_blocks.bucket_rows
    backlog = readings(GAP[0] + timedelta(days=1), GAP[0] + timedelta(days=1, hours=1), 1900.0)

    def computed_while_a_batch_lands(*args, **kwargs):
        rows = computing(*args, **kwargs)
        if backlog:
            store(device, [backlog.pop()])  # stored and its drop done, meanwhile
        return rows

    monkeypatch.setattr(series_blocks, "bucket_rows", computed_while_a_batch_lands)
    assembled(device, "15m", START, END)
    assert not SeriesBlock.objects.filter(device=device, interval="15m").exists()
    monkeypatch.undo()
    assert_same_answers(device)


def test_a_new_time_zone_drops_the_blocks_and_computes_them_in_it(device, history):
    series_blocks.fill_device(device.pk)
    device.timezone = "America/New_York"
    with TestCase.captureOnCommitCallbacks(execute=True):
        device.save()
    zones = set(SeriesBlock.objects.filter(device=device).values_list("timezone", flat=True))
    assert zones == {"America/New_York"}
    assert_same_answers(device)


@pytest.mark.django_db(transaction=True)
def test_a_block_is_not_stored_while_a_drop_is_in_progress_nor_after_it(device, history):
    """Real connections: a batch's drop holds the device row until it commits; a read
    that computed its blocks before it stores none, without waiting for the drop."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks between two connections: the PostgreSQL pass")
    SeriesBlock.objects.filter(device=device).delete()
    dropping, release = threading.Event(), threading.Event()

    def drop_and_hold() -> None:
        try:
            with transaction.atomic():
                series_blocks.forget(device.pk, GAP[0], GAP[0])
                dropping.set()
                release.wait(30)
        finally:
            connections.close_all()

    generation, _ = series_blocks._kept(device.pk, "15m", device.timezone, START, END)
    pieces = [
        series_blocks._Piece(day, day + timedelta(days=1), True)
        for day in (START + timedelta(days=n) for n in range(5))
    ]
    series_blocks._compute(device.pk, "15m", ZoneInfo(device.timezone), pieces)
    holder = threading.Thread(target=drop_and_hold)
    holder.start()
    try:
        assert dropping.wait(30)
        # In progress: the row is held, nothing stored (and no wait: this returns).
        assert series_blocks._store(device.pk, "15m", device.timezone, generation, pieces) == 0
    finally:
        release.set()
        holder.join(30)
    # Committed: the generation moved on.
    assert series_blocks._store(device.pk, "15m", device.timezone, generation, pieces) == 0
    assert not SeriesBlock.objects.filter(device=device).exists()
    # Read afresh, the same blocks are stored.
    generation, _ = series_blocks._kept(device.pk, "15m", device.timezone, START, END)
    assert series_blocks._store(device.pk, "15m", device.timezone, generation, pieces) == 5


def test_with_the_worker_a_backlog_batch_drops_the_blocks_in_its_own_request(
    device, history, settings
):
    series_blocks.fill_device(device.pk)
    settings.INGEST_STEPS_WORKER = True
    before = set(SeriesBlock.objects.filter(device=device).values_list("interval", "start"))
    store(device, readings(GAP[0] + timedelta(days=1), GAP[0] + timedelta(days=1, hours=2), 1900.0))
    after = set(SeriesBlock.objects.filter(device=device).values_list("interval", "start"))
    assert ("15m", datetime(2026, 4, 2, tzinfo=UTC)) in before - after  # before any worker
    assert PendingBatch.objects.filter(device=device).exists()
    assert_same_answers(device)


def test_the_fill_command_stores_the_missing_blocks_and_names_an_unknown_device(device, history):
    SeriesBlock.objects.filter(device=device).delete()
    out = io.StringIO()
    call_command("fill_series_blocks", stdout=out)
    stored = SeriesBlock.objects.filter(device=device).count()
    assert out.getvalue() == f"stored {stored} series blocks of home-p1\n" and stored > 21
    call_command("fill_series_blocks", device.device_id, stdout=out)  # nothing missing
    assert out.getvalue().endswith("stored 0 series blocks of home-p1\n")
    with pytest.raises(CommandError, match=r"^device_ids: no device nowhere$"):
        call_command("fill_series_blocks", "nowhere")


@pytest.mark.django_db(databases=[])
@pytest.mark.parametrize("zone", ["Europe/Brussels", "UTC", "America/St_Johns", "Asia/Kathmandu"])
def test_the_blocks_a_span_closes_are_found_whatever_its_day(zone):
    """closed_blocks skips the walk for a span within one day, UTC's and the zone's (a
    live batch's): every block must still be found, at midnights, across DST changes
    (the last Sundays of March and October in Brussels) and in zones a quarter or half
    an hour off UTC."""
    tz = ZoneInfo(zone)
    pick = random.Random(zone)
    moments = [
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),  # Brussels' spring change
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # and its autumn one
        datetime(2026, 11, 30, 23, 0, tzinfo=UTC),  # 1 December in Brussels
        datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
    ]
    moments += [
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=pick.randrange(366 * 86400))
        for _ in range(200)
    ]
    for moment in moments:
        for length in (timedelta(seconds=10), timedelta(minutes=40), timedelta(hours=30)):
            since = moment - series_blocks.FILL_LOOKBACK
            until = moment + length
            assert series_blocks.closed_blocks(since, until, tz) == walked(since, until, tz), (
                moment,
                length,
            )


def walked(since: datetime, until: datetime, tz: ZoneInfo) -> dict[str, list[datetime]]:
    """Every block of every interval walked from ``since``: the rule without its shortcut."""
    found = {}
    for interval in INTERVALS:
        starts, block = [], series_blocks.block_start(interval, since, tz)
        following = series_blocks.next_block(interval, block, tz)
        while following <= until:
            starts.append(block)
            block, following = following, series_blocks.next_block(interval, following, tz)
        if starts:
            found[interval] = starts
    return found
