"""Quarter power and monthly peaks.

``quarters_sql`` computes quarter power from the 15-minute rollup, never from raw
samples: a quarter's boundary register values are interpolated between the last sample
of the previous non-empty quarter and the first of the quarter itself (and likewise at
its end), read with LAG/LEAD. capacity.materialize stores its result in
capacity_quarter as samples arrive; the read functions here query that table. The
same SQL runs on PostgreSQL (with or without TimescaleDB) and on SQLite; only the
expression for "seconds since the epoch" differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from capacity.rules import COMPLETE_COVERAGE, QUARTER_S, Month, MonthPeak
from p1common.replica import read_alias
from telemetry import segments
from telemetry.storage import StoragePlan, plan_for


@dataclass(frozen=True)
class QuarterPower:
    start: datetime
    kw: float
    coverage: float
    sample_count: int
    first_ts: datetime
    last_ts: datetime

    @property
    def incomplete(self) -> bool:
        return self.coverage < COMPLETE_COVERAGE


def _db() -> BaseDatabaseWrapper:
    """The connection these queries use: the primary, or the replica under
    p1common.replica.replica_reads() (a read endpoint's choice)."""
    return connections[read_alias()]


def _plan() -> StoragePlan:
    return plan_for(read_alias())


def _epoch(column: str) -> str:
    return _plan().epoch_sql(column)


def param(moment: datetime) -> str | datetime | None:
    """The moment as the backend's raw SQL takes it: text on SQLite, the datetime itself
    on PostgreSQL (the stubs know only the text)."""
    return _db().ops.adapt_datetimefield_value(moment)


# The spans quarters_sql recomputes: quarters starting in [span_start, span_end).
SPAN_COLUMNS = (("idx", "int"), ("device", "int"), ("span_start", "ts"), ("span_end", "ts"))


def quarters_sql(spans: str) -> str:
    """Quarter kW for each span (idx, device, span_start, span_end) of the relation
    ``spans``: one row (device, bucket, kw, coverage, ...) per non-empty quarter starting
    in the span. Spans of one device must not share a quarter.

    Registers are read as one continuous series across register segments
    (telemetry.segments): each raw value less the steps of the breaks before it. Across a
    step that series is flat, so a boundary is never interpolated across it and the
    quarter holding it counts only its measured parts; the time across the step is not
    coverage either.
    """
    e = _epoch
    each_quarter = plan_for().join_each(
        "telemetry_quarter", "q", "q.device_id = g.device AND q.bucket >= g.lo AND q.bucket <= g.hi"
    )
    start_value = (
        f"CASE WHEN prev_ts IS NULL THEN first_v ELSE prev_v + (first_v - prev_v) * "
        f"({e('bucket')} - {e('prev_ts')}) / ({e('first_ts')} - {e('prev_ts')}) END"
    )
    end_value = (
        f"CASE WHEN next_ts IS NULL THEN last_v ELSE last_v + (next_v - last_v) * "
        f"({e('bucket')} + {QUARTER_S} - {e('last_ts')}) / ({e('next_ts')} - {e('last_ts')}) END"
    )
    return f"""
    WITH spans AS ({spans}),
    edges AS (
        SELECT s.idx, s.device, s.span_start, s.span_end,
            COALESCE((SELECT max(bucket) FROM telemetry_quarter
                      WHERE device_id = s.device AND bucket < s.span_start), s.span_start) AS lo,
            COALESCE((SELECT min(bucket) FROM telemetry_quarter
                      WHERE device_id = s.device AND bucket >= s.span_end), s.span_end) AS hi
        FROM spans s
    ),
    measured AS (
        SELECT g.idx, g.device, g.span_start, g.span_end,
            q.bucket, q.first_ts, q.last_ts, q.sample_count,
            q.first_import_kwh - {segments.offset_sql("q.first_ts", device="g.device")} AS first_v,
            q.last_import_kwh - {segments.offset_sql("q.last_ts", device="g.device")} AS last_v,
            {segments.gap_sql("q.first_ts", "q.last_ts", device="g.device")} AS gap_s
        FROM edges g {each_quarter}
    ),
    neighbours AS (
        SELECT device, span_start, span_end, bucket, first_ts, last_ts, sample_count,
            first_v, last_v, gap_s,
            LAG(last_ts) OVER w AS prev_ts, LAG(last_v) OVER w AS prev_v,
            LEAD(first_ts) OVER w AS next_ts, LEAD(first_v) OVER w AS next_v
        FROM measured
        WINDOW w AS (PARTITION BY idx ORDER BY bucket)
    ),
    quarters AS (
        SELECT device, bucket, first_ts, last_ts, sample_count,
            ({end_value} - {start_value}) * 4 AS kw,
            CASE WHEN sample_count > 1
                THEN ({e("last_ts")} - {e("first_ts")} - gap_s) * sample_count
                     / (sample_count - 1) / {QUARTER_S}
                ELSE 0 END AS coverage
        FROM neighbours
        WHERE bucket >= span_start AND bucket < span_end
    )
    """


_QUARTER_COLUMNS = "bucket, kw, coverage, sample_count, first_ts, last_ts"


def _quarter_powers(rows: Iterable[Sequence[Any]]) -> list[QuarterPower]:
    convert = _datetime_converter()
    return [
        QuarterPower(convert(b), kw, coverage, count, convert(first), convert(last))
        for b, kw, coverage, count, first, last in rows
    ]


def quarter_powers(device_pk: int, start: datetime, end: datetime) -> list[QuarterPower]:
    """Every non-empty quarter starting in [start, end), in time order."""
    with _db().cursor() as cursor:
        cursor.execute(
            f"SELECT {_QUARTER_COLUMNS} FROM capacity_quarter "
            "WHERE device_id = %s AND bucket >= %s AND bucket < %s ORDER BY bucket",
            [device_pk, param(start), param(end)],
        )
        return _quarter_powers(cursor.fetchall())


def top_quarters(device_pk: int, start: datetime, end: datetime, limit: int) -> list[QuarterPower]:
    """The highest quarters starting in [start, end), highest first; the earliest wins a
    tie. Its counts are kept in capacity_month (``month_rows``)."""
    with _db().cursor() as cursor:
        cursor.execute(
            f"SELECT {_QUARTER_COLUMNS} FROM capacity_quarter "
            "WHERE device_id = %s AND bucket >= %s AND bucket < %s "
            "ORDER BY kw DESC, bucket LIMIT %s",
            [device_pk, param(start), param(end), limit],
        )
        return _quarter_powers(cursor.fetchall())


@dataclass(frozen=True)
class MonthRow:
    peak_kw: float
    peak_bucket: datetime
    quarters_with_data: int
    complete_quarters: int
    meter_peak_w: float | None
    meter_peak_ts: datetime | None


def month_rows(device_pk: int, starts: list[datetime]) -> dict[datetime, MonthRow]:
    """capacity_month rows by local month start (as UTC instants); absent: no data."""
    if not starts:
        return {}
    placeholders = ", ".join(["%s"] * len(starts))
    with _db().cursor() as cursor:
        cursor.execute(
            "SELECT month_start, peak_kw, peak_bucket, quarters_with_data, complete_quarters,"
            " meter_peak_w, meter_peak_ts FROM capacity_month"
            f" WHERE device_id = %s AND month_start IN ({placeholders})",
            [device_pk, *map(param, starts)],
        )
        rows = cursor.fetchall()
    convert = _datetime_converter()
    return {
        convert(start): MonthRow(
            kw,
            convert(bucket),
            with_data,
            complete,
            meter_w,
            None if meter_ts is None else convert(meter_ts),
        )
        for start, kw, bucket, with_data, complete, meter_w, meter_ts in rows
    }


def month_peaks(device_pk: int, months: list[tuple[Month, datetime, datetime]]) -> list[MonthPeak]:
    """The highest quarter of each whole month."""
    found = month_rows(device_pk, [start for _, start, _ in months])
    return [
        MonthPeak(month, found[start].peak_kw if start in found else None)
        for month, start, _ in months
    ]


@dataclass(frozen=True)
class MeterPeakRow:
    peak_w: float
    ts: datetime | None


def meter_peaks_of(rows: dict[datetime, MonthRow]) -> dict[datetime, MeterPeakRow]:
    """The meter's own monthly peak as it last reported it, of month rows already read
    (``month_rows``), keyed by month start; absent: no report. Kept in capacity_month
    by capacity.materialize."""
    return {
        start: MeterPeakRow(row.meter_peak_w, row.meter_peak_ts)
        for start, row in rows.items()
        if row.meter_peak_w is not None
    }


@dataclass(frozen=True)
class OperatorMonth:
    """A month of the grid operator's imported quarters: how many, and its highest."""

    quarters: int
    peak_kw: float


def _months_join(bounds: list[tuple[datetime, datetime]]) -> tuple[str, list[Any]]:
    months = " UNION ALL ".join(["SELECT %s AS lo, %s AS hi"] * len(bounds))
    return f"({months}) months", [param(moment) for pair in bounds for moment in pair]


def operator_months(
    device_pk: int, bounds: list[tuple[datetime, datetime]]
) -> dict[datetime, OperatorMonth]:
    """Per [start, end): the operator's quarters (capacity_operator_quarter), keyed by
    start; absent: none imported. One query for any number of months. Our own months
    are kept summarised in capacity_month."""
    if not bounds:
        return {}
    months, months_params = _months_join(bounds)
    with _db().cursor() as cursor:
        cursor.execute(
            "SELECT months.lo, count(*), max(q.kw)"
            f" FROM {months} JOIN capacity_operator_quarter q"
            "  ON q.device_id = %s AND q.bucket >= months.lo AND q.bucket < months.hi"
            " GROUP BY months.lo",
            [*months_params, device_pk],
        )
        rows = cursor.fetchall()
    convert = _datetime_converter()
    return {convert(lo): OperatorMonth(quarters, kw) for lo, quarters, kw in rows}


@dataclass(frozen=True)
class QuarterOpening:
    """What the running quarter's outlook needs beyond the latest sample: the samples
    either side of its start (ts, raw import register) and the month's peak before it."""

    after: tuple[datetime, float] | None
    before: tuple[datetime, float] | None
    peak_before_kw: float | None


# How far before the quarter's start its previous sample is looked for first: bounded,
# a TimescaleDB hypertable plans only the chunks it can reach (every chunk otherwise,
# tens of ms once they are compressed); a device silent that long is looked up again
# without the bound.
OPENING_LOOKBACK = timedelta(days=1)
_BEFORE = (
    "SELECT ts, energy_import_kwh FROM telemetry_sample WHERE device_id = %(device)s"
    " AND ts < %(start)s{since} ORDER BY ts DESC LIMIT 1"
)


def quarter_opening(
    device_pk: int, quarter_start: datetime, month_start: datetime
) -> QuarterOpening:
    """One round trip (two for a device silent over OPENING_LOOKBACK before it): the
    first sample at or after the quarter's start, the last one before it, and the
    highest quarter of the month before it."""
    params = {
        "device": device_pk,
        "start": param(quarter_start),
        "month": param(month_start),
        "since": param(quarter_start - OPENING_LOOKBACK),
    }
    with _db().cursor() as cursor:
        cursor.execute(
            "SELECT 0, ts, energy_import_kwh FROM (SELECT ts, energy_import_kwh"
            "  FROM telemetry_sample WHERE device_id = %(device)s AND ts >= %(start)s"
            "  ORDER BY ts LIMIT 1) a"
            " UNION ALL SELECT 1, ts, energy_import_kwh FROM ("
            + _BEFORE.format(since=" AND ts >= %(since)s")
            + ") b"
            " UNION ALL SELECT 2, NULL, max(kw) FROM capacity_quarter"
            "  WHERE device_id = %(device)s AND bucket >= %(month)s AND bucket < %(start)s",
            params,
        )
        rows = {row[0]: row[1:] for row in cursor.fetchall()}
        if 1 not in rows:
            cursor.execute(_BEFORE.format(since=""), params)
            found = cursor.fetchone()
            if found is not None:
                rows[1] = found
    convert = _datetime_converter()

    def sample(place: int) -> tuple[datetime, float] | None:
        found = rows.get(place)
        return None if found is None else (convert(found[0]), found[1])

    return QuarterOpening(sample(0), sample(1), rows[2][1])


def peak_between(device_pk: int, start: datetime, end: datetime) -> float | None:
    """The highest quarter starting in [start, end), e.g. this month before now."""
    with _db().cursor() as cursor:
        cursor.execute(
            "SELECT max(kw) FROM capacity_quarter "
            "WHERE device_id = %s AND bucket >= %s AND bucket < %s",
            [device_pk, param(start), param(end)],
        )
        return cursor.fetchone()[0]


def _datetime_converter() -> Callable[[Any], datetime]:
    """Raw SQL timestamps as aware datetimes, whatever the database hands back."""
    return _plan().to_datetime
