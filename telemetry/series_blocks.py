"""Series answers assembled from blocks computed ahead, so that a first request for
10,000 buckets reads a hundred stored blocks instead of computing every bucket.

A block is the buckets of one interval over a fixed stretch of time (``block_start``):
a UTC day of quarters, a UTC week of hours, a local month of days, four local weeks of
weeks, a local month for months. A bucket's figures depend only on the rollup rows at
and next to its boundaries, so a block's buckets are the same computed alone or inside a
wider range. An answer is its range cut at block edges: each whole block kept in
telemetry_seriesblock is embedded as stored JSON; every other piece (the partial blocks
at the range's ends, the open block at the live end, blocks never computed) is computed
by telemetry.series, one statement per run of consecutive pieces, and a read stores the
whole blocks it computed. Pieces outside the device's rollup rows hold no bucket and are
not computed at all.

Kept exact as the cache is (telemetry.series_cache): a block keeps the span of samples
it was computed from, and ``forget`` (a batch's ingest step, a capacity rebuild) drops
the device's blocks that span reaches and raises the device's series_generation in the
same transaction, the raise first. A block is stored only if the generation read before
it was computed is still the device's, checked under the device row's lock in the
storing transaction (not stored at all while a drop holds the row): a block computed
from data a drop has since made stale is never stored, whichever commits first (the
drop's delete runs after its raise took the row, so it sees any block stored before).

Only blocks with a reading after them are stored, so live batches, whose samples are
newer than every stored reading, never drop one. ``fill_closed`` computes the
blocks that closed within a batch's span (the quarters of a UTC day, after midnight),
``fill_device`` every block of a device (after a bulk load, a capacity rebuild). With
the worker or without, the statement that stores a batch drops the blocks its rows reach
(telemetry.storage, in the batch's own commit), and the steps drop them again with the
generation raised (a block a read was computing from older data meanwhile).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
from django.db import DEFAULT_DB_ALIAS, DatabaseError, transaction
from django.db.models import F, Max, Min

from p1common.replica import read_alias
from telemetry.models import Device, HourRollup, QuarterRollup, SeriesBlock
from telemetry.pipeline import StoredBatch
from telemetry.series import (
    INTERVALS,
    MAX_POINTS,
    Dependence,
    bucket_rows,
    outer_bounds,
    period_starts,
    span_of,
)
from telemetry.storage import plan_for
from telemetry.storage.base import BLOCK_SPAN_COLUMNS
from telemetry.timegrid import local_midnight

logger = logging.getLogger(__name__)

_UTC_WIDTH = {"15m": timedelta(days=1), "1h": timedelta(days=7)}
_UTC_ORIGIN = datetime(1970, 1, 5, tzinfo=UTC)  # a Monday
_WEEK_ORIGIN = date(1970, 1, 5)
_WEEKS_PER_BLOCK = 4
# The most buckets a block holds: a run of blocks computed at once stays within
# series.MAX_POINTS.
_MOST_BUCKETS = {"15m": 96, "1h": 168, "1d": 31, "1w": _WEEKS_PER_BLOCK, "1mo": 1}
# A batch fills the blocks that ended within its span or this little before it: the
# day's block is complete once the first reading after midnight is stored, and the
# meter's readings are seconds apart (a gap longer than this leaves it to the first read).
FILL_LOOKBACK = timedelta(minutes=30)


def block_start(interval: str, moment: datetime, tz: ZoneInfo) -> datetime:
    """The start of the block holding ``moment``."""
    width = _UTC_WIDTH.get(interval)
    if width is not None:
        return _UTC_ORIGIN + ((moment - _UTC_ORIGIN) // width) * width
    day = moment.astimezone(tz).date()
    if interval == "1w":
        day -= timedelta(days=(day - _WEEK_ORIGIN).days % (7 * _WEEKS_PER_BLOCK))
    else:
        day = day.replace(day=1)
    return local_midnight(day, tz)


def next_block(interval: str, start: datetime, tz: ZoneInfo) -> datetime:
    """The start of the block after the one starting at ``start``."""
    width = _UTC_WIDTH.get(interval)
    if width is not None:
        return start + width
    day = start.astimezone(tz).date()
    if interval == "1w":
        day += timedelta(days=7 * _WEEKS_PER_BLOCK)
    else:
        day = (day + timedelta(days=32)).replace(day=1)
    return local_midnight(day, tz)


@dataclass
class _Piece:
    start: datetime
    end: datetime
    whole: bool
    fragment: bytes = b""
    span: Dependence | None = None

    @property
    def storable(self) -> bool:
        """A whole block with buckets and a reading after it: the only blocks kept."""
        return (
            self.whole
            and bool(self.fragment)
            and self.span is not None
            and (self.span.last is not None)
        )


def _pieces(interval: str, first: datetime, last: datetime, tz: ZoneInfo) -> list[_Piece]:
    """[first, last) cut at block edges; whole where a piece is a block."""
    out = []
    at, block = first, block_start(interval, first, tz)
    while at < last:
        following = next_block(interval, block, tz)
        end = min(following, last)
        out.append(_Piece(at, end, at == block and end == following))
        at, block = end, following
    return out


def answer(
    device_pk: int, interval: str, start: datetime, end: datetime, tz: ZoneInfo
) -> tuple[bytes, Dependence]:
    """The buckets of [start, end) as the JSON array the answer embeds, and the span of
    samples they depend on; equal to telemetry.series.series_with_dependence's."""
    first, last = outer_bounds(interval, start, end, tz)
    pieces = _pieces(interval, first, last, tz)
    generation, kept = _kept(device_pk, interval, tz.key, first, last)
    missing = []
    for piece in pieces:
        found = kept.get(piece.start) if piece.whole else None
        if found is not None and found[0] == piece.end:
            piece.fragment, piece.span = found[1], found[2]
        else:
            missing.append(piece)
    if missing:
        _compute(device_pk, interval, tz, missing)
        if read_alias() == DEFAULT_DB_ALIAS:
            _store(device_pk, interval, tz.key, generation, [p for p in missing if p.storable])
    body = b"[" + b",".join(p.fragment for p in pieces if p.fragment) + b"]"
    return body, _union([p.span for p in pieces if p.span is not None])


def _kept(
    device_pk: int, interval: str, timezone: str, first: datetime, last: datetime
) -> tuple[int | None, dict[datetime, tuple[datetime, bytes, Dependence]]]:
    """The device's generation, then its stored blocks inside [first, last): read in
    that order, so the generation is never newer than the blocks and data read after."""
    generation = (
        Device.objects.filter(pk=device_pk).values_list("series_generation", flat=True).first()
    )
    rows = SeriesBlock.objects.filter(
        device_id=device_pk, interval=interval, timezone=timezone, start__gte=first, end__lte=last
    ).values_list("start", "end", "buckets", "depends_from", "depends_until")
    return generation, {
        start: (end, bytes(buckets), Dependence(since, until))
        for start, end, buckets, since, until in rows
    }


_EVERYWHERE = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


def _extent(device_pk: int, interval: str) -> tuple[datetime | None, datetime | None]:
    model = QuarterRollup if interval == "15m" else HourRollup
    found = model.objects.filter(device_id=device_pk).aggregate(
        first=Min("bucket"), last=Max("bucket")
    )
    return found["first"], found["last"]


def _compute(device_pk: int, interval: str, tz: ZoneInfo, pieces: list[_Piece]) -> None:
    """Fill each piece's buckets and span: runs of adjacent pieces in one statement;
    pieces wholly outside the device's rollup rows are empty without one (looked up
    only where more than the two ends of a range are missing: on TimescaleDB the
    extent of a continuous aggregate costs as much as computing a piece)."""
    first_row, last_row = _extent(device_pk, interval) if len(pieces) > 2 else _EVERYWHERE
    run: list[_Piece] = []
    for piece in pieces:
        outside = (
            first_row is None
            or last_row is None
            or piece.end <= first_row
            or piece.start > last_row
        )
        if outside:
            piece.span = Dependence(piece.start, piece.end)
        if run and (outside or run[-1].end != piece.start or _too_long(interval, run)):
            _compute_run(device_pk, interval, tz, run)
            run = []
        if not outside:
            run.append(piece)
    if run:
        _compute_run(device_pk, interval, tz, run)


def _too_long(interval: str, run: list[_Piece]) -> bool:
    return (len(run) + 1) * _MOST_BUCKETS[interval] > MAX_POINTS


def _compute_run(device_pk: int, interval: str, tz: ZoneInfo, run: list[_Piece]) -> None:
    boundaries = period_starts(interval, run[0].start, run[-1].end, tz)
    rows = bucket_rows(device_pk, interval, boundaries, tz)
    at = 0
    for piece in run:
        taken = at
        while at < len(rows) and boundaries[rows[at].k - 1] < piece.end:
            at += 1
        mine = rows[taken:at]
        piece.span = span_of(mine, piece.start, piece.end)
        piece.fragment = orjson.dumps([row.bucket for row in mine])[1:-1]


def _union(spans: list[Dependence]) -> Dependence:
    if not spans:
        return Dependence(None, None)
    firsts = [span.first for span in spans]
    lasts = [span.last for span in spans]
    return Dependence(
        None if None in firsts else min(f for f in firsts if f is not None),
        None if None in lasts else max(t for t in lasts if t is not None),
    )


def _store(
    device_pk: int, interval: str, timezone: str, generation: int | None, pieces: list[_Piece]
) -> int:
    """Store the pieces as blocks unless the device's blocks were dropped since
    ``generation`` was read; how many it stored (one another read stored meanwhile is
    kept once, and counted)."""
    if not pieces or generation is None:
        return 0
    blocks = [
        SeriesBlock(
            device_id=device_pk,
            interval=interval,
            timezone=timezone,
            start=piece.start,
            end=piece.end,
            depends_from=piece.span.first,
            depends_until=piece.span.last,
            buckets=piece.fragment,
        )
        for piece in pieces
        if piece.span is not None and piece.span.last is not None
    ]
    try:
        with transaction.atomic():
            # FOR NO KEY UPDATE: taken only when no drop is in progress (its raise holds
            # the row until its commit), and it does not hold up the samples' foreign-key
            # checks on the device row. NOWAIT: a read never waits on the worker's
            # transaction; it leaves the blocks to the next read.
            current = (
                Device.objects.select_for_update(no_key=True, nowait=True)
                .filter(pk=device_pk)
                .values_list("series_generation", flat=True)
                .first()
            )
            if current != generation:
                return 0
            return len(SeriesBlock.objects.bulk_create(blocks, ignore_conflicts=True))
    except DatabaseError:
        # A drop in progress holds the device row (PostgreSQL), or on SQLite a writer
        # committed since this transaction's read: the conflicts the check is for. The
        # answer stands; the blocks wait for the next read.
        logger.info("series blocks of device %s not stored", device_pk, exc_info=True)
        return 0


# --- dropping and filling ---------------------------------------------------------------


# Raw: it runs in the steps of every chunk of devices, where the ORM's update costs more
# than the statement.
_RAISE = """
WITH spans AS ({spans})
UPDATE telemetry_device SET series_generation = series_generation + 1
WHERE id IN (SELECT device FROM spans)
"""


def forget(device_pk: int, oldest: datetime, newest: datetime) -> int:
    """Drop the device's blocks whose span reaches [oldest, newest], in the caller's
    transaction; how many."""
    return forget_spans([(device_pk, oldest, newest)])


def forget_spans(spans: Sequence[tuple[int, datetime, datetime]]) -> int:
    """``forget`` for every (device, oldest, newest) at once, in two statements; how
    many blocks."""
    plan = plan_for()
    relation = plan.rows_sql("spans", BLOCK_SPAN_COLUMNS)
    # Two statements, the raise first: the delete's snapshot must be taken after the
    # raise has the device rows, so it sees a block stored by whoever held them before.
    with transaction.atomic(savepoint=False), plan.prepared_cursor() as cursor:
        cursor.execute(_RAISE.format(spans=relation), {"spans": plan.rows_param(spans)})
        return plan.delete_blocks_reached(cursor, spans)


def forget_all(device_pk: int) -> int:
    """Drop every block of the device (its register breaks or zone changed)."""
    with transaction.atomic(savepoint=False):
        Device.objects.filter(pk=device_pk).update(series_generation=F("series_generation") + 1)
        dropped, _ = SeriesBlock.objects.filter(device_id=device_pk).delete()
    return dropped


def forget_after_batches(batches: Sequence[StoredBatch]) -> None:
    """Ingest step: drop the blocks the batches touch (in the steps' commit), then, once
    committed, compute the blocks they closed."""
    forget_spans([(b.device_pk, b.oldest, b.newest) for b in batches])
    for batch in batches:
        # Robust: the batch and its steps are committed; a block not computed now is
        # computed by the first read that needs it.
        transaction.on_commit(functools.partial(fill_closed, batch), robust=True)


def fill_closed(batch: StoredBatch) -> int:
    """Compute and store the blocks that ended within the batch's span (or just before
    it); how many were stored."""
    tz = ZoneInfo(batch.timezone)
    stored = 0
    for interval, starts in closed_blocks(batch.oldest - FILL_LOOKBACK, batch.newest, tz).items():
        stored += _fill(batch.device_pk, interval, tz, starts)
    return stored


def closed_blocks(since: datetime, until: datetime, tz: ZoneInfo) -> dict[str, list[datetime]]:
    """The starts of the blocks of each interval that end in (since, until]."""
    # Every block ends at a midnight, UTC's or the zone's: a span within one day of
    # both, as nearly every live batch is, ends none. The worker asks for every batch.
    if since.astimezone(UTC).date() == until.astimezone(UTC).date() and (
        since.astimezone(tz).date() == until.astimezone(tz).date()
    ):
        return {}
    found = {}
    for interval in INTERVALS:
        starts = []
        block = block_start(interval, since, tz)
        following = next_block(interval, block, tz)
        while following <= until:
            starts.append(block)
            block, following = following, next_block(interval, following, tz)
        if starts:
            found[interval] = starts
    return found


def fill_device(device_pk: int) -> int:
    """Compute and store every block of the device that has a reading after it; how
    many were stored."""
    timezone = Device.objects.values_list("timezone", flat=True).get(pk=device_pk)
    tz = ZoneInfo(timezone)
    stored = 0
    for interval in INTERVALS:
        first_row, last_row = _extent(device_pk, interval)
        if first_row is None or last_row is None:
            continue
        starts = []
        block = block_start(interval, first_row, tz)
        while block <= last_row:
            starts.append(block)
            block = next_block(interval, block, tz)
        stored += _fill(device_pk, interval, tz, starts)
    return stored


def _fill(device_pk: int, interval: str, tz: ZoneInfo, starts: Iterable[datetime]) -> int:
    """Compute the blocks starting at ``starts`` (ascending) that are not stored, and
    store those with a reading after them."""
    starts = list(starts)
    generation, kept = _kept(
        device_pk, interval, tz.key, starts[0], next_block(interval, starts[-1], tz)
    )
    pieces = [
        _Piece(start, next_block(interval, start, tz), True)
        for start in starts
        if start not in kept
    ]
    if not pieces:
        return 0
    _compute(device_pk, interval, tz, pieces)
    return _store(device_pk, interval, tz.key, generation, [p for p in pieces if p.storable])
