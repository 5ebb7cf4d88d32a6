"""Quarter power and monthly peaks, computed in SQL from the 15-minute rollup.

Never a raw-sample scan: a quarter's boundary register values are interpolated between
the last sample of the previous non-empty quarter and the first of the quarter itself
(and likewise at its end), both read from telemetry_quarter with LAG/LEAD. The same
SQL runs on PostgreSQL (with or without TimescaleDB) and on SQLite; only the
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
        return f"extract(epoch FROM {column})::float8"
    # Django stores 'YYYY-MM-DD HH:MM:SS[.ffffff]'. julianday() keeps only milliseconds,
    # so whole seconds come from strftime('%s') and the fraction is added as text.
    return (
        f"(CAST(strftime('%%s', {column}) AS REAL)"
        f" + COALESCE(CAST(NULLIF(substr({column}, 20), '') AS REAL), 0.0))"
    )


def _param(moment: datetime):
    return connection.ops.adapt_datetimefield_value(moment)


def _quarters_sql() -> str:
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


def quarter_powers(device_pk: int, start: datetime, end: datetime) -> list[QuarterPower]:
    """Every non-empty quarter starting in [start, end), in time order."""
    sql = _quarters_sql() + (
        "SELECT bucket, kw, coverage, sample_count, first_ts, last_ts FROM quarters ORDER BY bucket"
    )
    params = {"device": device_pk, "start": _param(start), "end": _param(end)}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    convert = _datetime_converter()
    return [
        QuarterPower(
            start=convert(bucket),
            kw=max(kw, 0.0),  # registers never fall; this only absorbs rounding
            coverage=min(coverage, 1.0),
            sample_count=count,
            first_ts=convert(first_ts),
            last_ts=convert(last_ts),
        )
        for bucket, kw, coverage, count, first_ts, last_ts in rows
    ]


def month_peaks(device_pk: int, months: list[tuple[Month, datetime, datetime]]) -> list[MonthPeak]:
    """The highest quarter of each month, in one pass over the months' quarters."""
    if not months:
        return []
    cases = " ".join(f"WHEN bucket < %(end{i})s THEN {i}" for i in range(len(months)))
    sql = _quarters_sql() + (
        f"SELECT CASE {cases} END AS month_index, max(kw) FROM quarters GROUP BY 1"
    )
    params = {
        "device": device_pk,
        "start": _param(months[0][1]),
        "end": _param(months[-1][2]),
        **{f"end{i}": _param(end) for i, (_, _, end) in enumerate(months)},
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = dict(cursor.fetchall())
    return [
        MonthPeak(month, None if found.get(i) is None else max(found[i], 0.0))
        for i, (month, _, _) in enumerate(months)
    ]


def _datetime_converter():
    """SQLite hands raw SQL timestamps back naive (or as text); PostgreSQL aware."""
    if connection.vendor == "postgresql":
        return lambda value: value

    def to_aware(value) -> datetime:
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC)

    return to_aware
