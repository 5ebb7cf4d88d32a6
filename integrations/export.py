"""CSV export of a device's samples, quarters and months (GET /v1/export, the admin).

Streaming and bounded: rows are read in keyset pages of ``PAGE_ROWS`` (ts > the last
one sent), each page a query of its own, and written out as they are read, so a year of
2 s samples (about 16 million rows) never sits in memory, and no database cursor is held
open between pages (a connection pooler in transaction mode has none to keep). A range
is at most ``MAX_SPAN`` of its kind.

The quarters and months are the capacity answers' own figures (capacity.reports,
capacity.queries, telemetry.series), rounded the same way, so an export equals what
/v1/capacity/quarters, /v1/capacity/months, /v1/capacity/month/{m} and
/v1/series?interval=1mo say (tests/integrations/test_export.py).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import p1wire as wire
from capacity import provenance, queries, reports, rules
from capacity.rules import Month
from p1common.replica import replica_reads
from telemetry.models import Device, RegisterBreak, Sample
from telemetry.series import series
from telemetry.timegrid import QUARTER, bucket_start

KINDS = ("samples", "quarters", "months")
PAGE_ROWS = 5000
# The most samples one export may stream. gunicorn's sync worker is killed after
# GUNICORN_TIMEOUT (30 s by default) even mid-body, which leaves a CSV cut short after a
# 200 that no parser can tell from a whole one, and an export holds a worker that ingest
# needs. This is a local day of 1 s readings (90,000 on the 25-hour day), and at the
# export rate measured over real gunicorn (tests/integrations/test_metrics.py asserts
# it fits in half the timeout; docs/INTEGRATIONS.md) a few seconds. A range holding
# more is refused (400) before anything is streamed.
MAX_SAMPLE_ROWS = 100_000
# Per kind: the widest range one request may ask for, and the range when none is given.
MAX_SPAN = {
    "samples": timedelta(days=367),
    "quarters": timedelta(days=367),
    "months": timedelta(days=3660),
}
DEFAULT_SPAN = {
    "samples": timedelta(days=1),
    "quarters": timedelta(days=31),
    "months": timedelta(days=366),
}

SAMPLE_COLUMNS = (*wire.SAMPLE_FIELDS, "register_break")
QUARTER_COLUMNS = ("start", "end", "kw", "import_kwh", "coverage", "incomplete", "sample_count")
MONTH_COLUMNS = (
    "month",
    "start",
    "peak_kw",
    "peak_quarter_start",
    "billed_peak_kw",
    "peak_missing",
    "rolling_average_kw",
    "meter_reported_peak_kw",
    "meter_reported_peak_ts",
    "import_kwh",
    "export_kwh",
)
COLUMNS = {"samples": SAMPLE_COLUMNS, "quarters": QUARTER_COLUMNS, "months": MONTH_COLUMNS}


class _Line:
    """csv.writer's file: hands back each written line instead of keeping it."""

    def write(self, text: str) -> str:
        return text


def _cell(value: Any, tz: ZoneInfo) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(tz).isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def csv_lines(kind: str, device: Device, start: datetime, end: datetime) -> Iterator[str]:
    """The export as CSV lines (header first), produced while it is read."""
    tz = ZoneInfo(device.timezone)
    # In UTC: Python subtracts two moments of one zone by their wall clocks, which is an
    # hour off across a clock change.
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    writer = csv.writer(_Line(), lineterminator="\n")
    yield writer.writerow(COLUMNS[kind])
    rows: Iterable[tuple[Any, ...]]
    if kind == "samples":
        rows = sample_rows(device, start, end)
    elif kind == "quarters":
        rows = quarter_rows(device, start, end)
    else:
        rows = month_rows(device, start, end)
    for row in rows:
        yield writer.writerow([_cell(value, tz) for value in row])


def holds_too_many_samples(
    device: Device, start: datetime, end: datetime, limit: int | None = None
) -> bool:
    """Whether [start, end) holds more than ``limit`` (MAX_SAMPLE_ROWS) samples: one
    query that reads at most ``limit + 1`` index entries, however wide the range."""
    limit = MAX_SAMPLE_ROWS if limit is None else limit
    with replica_reads():
        return (
            Sample.objects.filter(device=device, ts__gte=start, ts__lt=end)
            .order_by("ts")
            .values_list("ts", flat=True)[limit : limit + 1]
            .exists()
        )


def sample_rows(
    device: Device, start: datetime, end: datetime, page_rows: int = PAGE_ROWS
) -> Iterator[tuple[Any, ...]]:
    """Every sample in [start, end), oldest first, with a flag on the first sample of
    each new register segment (a meter swap: capacity register-breaks)."""
    with replica_reads():
        breaks = set(
            RegisterBreak.objects.filter(device=device, ts__gte=start, ts__lt=end).values_list(
                "ts", flat=True
            )[: reports.REGISTER_BREAKS_MAX]
        )
    after: datetime | None = None
    while True:
        page = Sample.objects.filter(device=device, ts__gte=start, ts__lt=end)
        if after is not None:
            page = page.filter(ts__gt=after)
        with replica_reads():
            found = list(page.order_by("ts").values_list(*wire.SAMPLE_FIELDS)[:page_rows])
        for row in found:
            yield (*row, row[0] in breaks)
        if len(found) < page_rows:
            return
        after = found[-1][0]


def quarter_rows(device: Device, start: datetime, end: datetime) -> Iterator[tuple[Any, ...]]:
    """Every clock quarter starting in [start, end), as /v1/capacity/quarters lists
    them (a quarter without samples too), read one local month at a time."""
    tz = ZoneInfo(device.timezone)
    month = Month.of(start, tz)
    while True:
        month_start, month_end = month.bounds(tz)
        lo, hi = max(start, month_start), min(end, month_end)
        if lo >= end:
            return
        if lo < hi:
            with replica_reads():
                found = {q.start: q for q in queries.quarter_powers(device.pk, lo, hi)}
            for moment in rules.quarter_starts(bucket_start(lo, QUARTER), hi):
                if moment < lo:
                    continue
                measured = found.get(moment)
                quarter = (
                    reports.Quarter.empty(moment)
                    if measured is None
                    else reports.Quarter.of(measured)
                )
                energy = None if measured is None else round(measured.kw / 4, 6)
                yield (
                    quarter.start,
                    quarter.start + QUARTER,
                    quarter.kw,
                    energy,
                    quarter.coverage,
                    quarter.incomplete,
                    quarter.sample_count,
                )
        month = month.shift(1)


def month_rows(device: Device, start: datetime, end: datetime) -> Iterator[tuple[Any, ...]]:
    """Every local month that overlaps [start, end), oldest first: its peak as
    /v1/capacity/months gives it, its 12-month average as /v1/capacity/month/{m} does,
    and its energy as /v1/series?interval=1mo."""
    tz = ZoneInfo(device.timezone)
    first, last = Month.of(start, tz), Month.of(end - timedelta(microseconds=1), tz)
    months = []
    month = first
    while (month.year, month.month) <= (last.year, last.month):
        months.append(month)
        month = month.shift(1)
    window = [first.shift(-i) for i in range(rules.ROLLING_MONTHS - 1, 0, -1)] + months
    starts = {m: m.bounds(tz)[0] for m in window}
    range_start, range_end = months[0].bounds(tz)[0], months[-1].bounds(tz)[1]
    with replica_reads():
        peaks = queries.month_rows(device.pk, list(starts.values()))
        meter = queries.meter_peaks_of(peaks)
        energy = {
            bucket["start"]: bucket
            for bucket in series(device.pk, "1mo", range_start, range_end, tz)
        }
        # Each month's figure by its provenance, as the month answer counts it.
        history = provenance.month_figures(device, window, peaks)
    policy = provenance.missing_month_policy()
    offset = len(window) - len(months)
    for i, month in enumerate(months):
        month_start = starts[month]
        row = peaks.get(month_start)
        average = provenance.rolling_average_kw(
            history[i + offset + 1 - rules.ROLLING_MONTHS : i + offset + 1], policy
        )
        meter_peak = meter.get(month_start)
        bucket = energy.get(month_start.astimezone(tz).isoformat(), {})
        yield (
            str(month),
            month_start,
            None if row is None else round(row.peak_kw, 3),
            None if row is None else row.peak_bucket,
            round(rules.billed_kw(None if row is None else row.peak_kw), 3),
            row is None,
            round(average, 3),
            None if meter_peak is None else round(meter_peak.peak_w / 1000, 3),
            None if meter_peak is None else meter_peak.ts,
            bucket.get("import_kwh"),
            bucket.get("export_kwh"),
        )


def file_name(kind: str, device: Device, start: datetime, end: datetime) -> str:
    tz = ZoneInfo(device.timezone)
    first, last = start.astimezone(tz).date(), end.astimezone(tz).date()
    return f"{device.device_id}-{kind}-{first.isoformat()}-{last.isoformat()}.csv"
