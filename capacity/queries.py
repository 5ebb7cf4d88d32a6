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

from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection

from capacity.rules import COMPLETE_COVERAGE, QUARTER_S, Month, MonthPeak


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


def _epoch(column: str) -> str:
    if connection.vendor == "postgresql":
        return f"date_part('epoch', {column})"
    # Django stores 'YYYY-MM-DD HH:MM:SS[.ffffff]'. julianday() keeps only milliseconds,
    # so whole seconds come from strftime('%s') and the fraction is added as text.
    return (
        f"(CAST(strftime('%%s', {column}) AS REAL)"
        f" + COALESCE(CAST(NULLIF(substr({column}, 20), '') AS REAL), 0.0))"
    )


def param(moment: datetime):
    return connection.ops.adapt_datetimefield_value(moment)


def quarters_sql() -> str:
    """Quarter kW for device %(device)s in [%(start)s, %(end)s); one row per non-empty quarter."""
    e = _epoch
    start_value = (
        f"CASE WHEN prev_ts IS NULL THEN first_v ELSE prev_v + (first_v - prev_v) * "
        f"({e('bucket')} - {e('prev_ts')}) / ({e('first_ts')} - {e('prev_ts')}) END"
    )
    end_value = (
        f"CASE WHEN next_ts IS NULL THEN last_v ELSE last_v + (next_v - last_v) * "
        f"({e('bucket')} + {QUARTER_S} - {e('last_ts')}) / ({e('next_ts')} - {e('last_ts')}) END"
    )
    return f"""
    WITH edges AS (
        SELECT
            COALESCE((SELECT max(bucket) FROM telemetry_quarter
                      WHERE device_id = %(device)s AND bucket < %(start)s), %(start)s) AS lo,
            COALESCE((SELECT min(bucket) FROM telemetry_quarter
                      WHERE device_id = %(device)s AND bucket >= %(end)s), %(end)s) AS hi
    ),
    neighbours AS (
        SELECT bucket, first_ts, last_ts, sample_count,
            first_import_kwh AS first_v, last_import_kwh AS last_v,
            LAG(last_ts) OVER w AS prev_ts, LAG(last_import_kwh) OVER w AS prev_v,
            LEAD(first_ts) OVER w AS next_ts, LEAD(first_import_kwh) OVER w AS next_v
        FROM telemetry_quarter, edges
        WHERE device_id = %(device)s AND bucket >= edges.lo AND bucket <= edges.hi
        WINDOW w AS (ORDER BY bucket)
    ),
    quarters AS (
        SELECT bucket, first_ts, last_ts, sample_count,
            ({end_value} - {start_value}) * 4 AS kw,
            CASE WHEN sample_count > 1
                THEN ({e("last_ts")} - {e("first_ts")}) * sample_count
                     / (sample_count - 1) / {QUARTER_S}
                ELSE 0 END AS coverage
        FROM neighbours
        WHERE bucket >= %(start)s AND bucket < %(end)s
    )
    """


_QUARTER_COLUMNS = "bucket, kw, coverage, sample_count, first_ts, last_ts"


def _quarter_powers(rows) -> list[QuarterPower]:
    convert = _datetime_converter()
    return [
        QuarterPower(convert(b), kw, coverage, count, convert(first), convert(last))
        for b, kw, coverage, count, first, last in rows
    ]


def quarter_powers(device_pk: int, start: datetime, end: datetime) -> list[QuarterPower]:
    """Every non-empty quarter starting in [start, end), in time order."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_QUARTER_COLUMNS} FROM capacity_quarter "
            "WHERE device_id = %s AND bucket >= %s AND bucket < %s ORDER BY bucket",
            [device_pk, param(start), param(end)],
        )
        return _quarter_powers(cursor.fetchall())


@dataclass(frozen=True)
class MonthSummary:
    top: list[QuarterPower]  # highest first; the first is the monthly peak
    with_data: int
    complete: int


def month_summary(device_pk: int, start: datetime, end: datetime, top: int) -> MonthSummary:
    """The month's highest quarters and how many quarters have (complete) data."""
    where = "WHERE device_id = %s AND bucket >= %s AND bucket < %s"
    params = [device_pk, param(start), param(end)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_QUARTER_COLUMNS} FROM capacity_quarter {where} "
            "ORDER BY kw DESC, bucket LIMIT %s",
            [*params, top],
        )
        highest = _quarter_powers(cursor.fetchall())
        cursor.execute(
            f"SELECT count(*), count(CASE WHEN coverage >= {COMPLETE_COVERAGE} THEN 1 END) "
            f"FROM capacity_quarter {where}",
            params,
        )
        with_data, complete = cursor.fetchone()
    return MonthSummary(highest, with_data, complete)


def month_peaks(device_pk: int, months: list[tuple[Month, datetime, datetime]]) -> list[MonthPeak]:
    """The highest quarter of each month: one index range per month."""
    if not months:
        return []
    one = (
        "SELECT max(kw) FROM capacity_quarter WHERE device_id = %s AND bucket >= %s AND bucket < %s"
    )
    sql = " UNION ALL ".join(f"SELECT {i}, ({one})" for i in range(len(months)))
    params = []
    for _, start, end in months:
        params += [device_pk, param(start), param(end)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = dict(cursor.fetchall())
    return [MonthPeak(month, found.get(i)) for i, (month, _, _) in enumerate(months)]


def _datetime_converter():
    """SQLite hands raw SQL timestamps back naive (or as text); PostgreSQL aware."""
    if connection.vendor == "postgresql":
        return lambda value: value

    def to_aware(value) -> datetime:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)

    return to_aware
