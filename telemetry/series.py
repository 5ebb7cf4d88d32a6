"""History buckets for GET /v1/series, from the rollup relations, in one SQL statement.

15m buckets are built from the 15-minute rollup, every other interval from the hourly
one; days, weeks (from Monday) and months start at local midnight in the device's time
zone (always a whole UTC hour in Belgium). The boundaries come from ``period_starts``
(the calendar rules, here once); the statement matches the rollup rows to them
(telemetry.storage: the one plan-specific part) and computes every figure of a bucket.

Energy per bucket is the import/export register delta between the bucket's boundaries,
each interpolated between the nearest samples around it, so the buckets of a range add
up to the register change over the range. Registers are read across register segments
(telemetry.segments): a meter swap adds no energy. Export is null where a boundary has
no export register (a meter without one).

Python only rounds the figures (its rounding, ties to even, is the answer's) and writes
each bucket's start: no object per rollup row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import connections

from p1common.replica import read_alias
from telemetry.storage import plan_for
from telemetry.storage.rollups import SERIES_COLUMNS
from telemetry.timegrid import HOUR, QUARTER, bucket_start, local_midnight

INTERVALS = ("15m", "1h", "1d", "1w", "1mo")
# The intervals whose buckets are the rows of their rollup relation.
_OWN_WIDTH = {"15m": QUARTER, "1h": HOUR}
MAX_POINTS = 10_000


class SeriesRangeError(ValueError):
    pass


@dataclass(frozen=True)
class Dependence:
    """The span of samples an answer was computed from: [first, last], None where it
    reaches every earlier (later) sample. A batch whose samples all lie outside it
    cannot change the answer (telemetry.series_cache)."""

    first: datetime | None
    last: datetime | None

    def touched_by(self, oldest: datetime, newest: datetime) -> bool:
        return (self.first is None or newest >= self.first) and (
            self.last is None or oldest <= self.last
        )


def period_starts(interval: str, start: datetime, end: datetime, tz: ZoneInfo) -> list[datetime]:
    """Bucket boundaries covering [start, end), aligned to the interval, plus the end."""
    if interval in ("15m", "1h"):
        # In UTC, like the rollups: steps of wall-clock time would make the hour a DST
        # change repeats part of a two-hour bucket (and one that skips, an empty one).
        width = QUARTER if interval == "15m" else HOUR
        first = bucket_start(start.astimezone(UTC), width)
        count = -(-(end - first) // width)
        _check_points(count)
        return [first + i * width for i in range(count + 1)]
    day = _first_day(interval, start, tz)
    starts = [local_midnight(day, tz)]
    while starts[-1] < end:
        day = _next_period(day, interval)
        starts.append(local_midnight(day, tz))
        _check_points(len(starts) - 1)
    return starts


def outer_bounds(
    interval: str, start: datetime, end: datetime, tz: ZoneInfo
) -> tuple[datetime, datetime]:
    """The first and last boundary of period_starts, without the list between: what an
    answer's buckets depend on (two requests with the same are answered alike, whatever
    their exact start and end). Raises SeriesRangeError as period_starts does."""
    width = _OWN_WIDTH.get(interval)
    if width is not None:
        first = bucket_start(start.astimezone(UTC), width)
        count = -(-(end - first) // width)
        _check_points(count)
        return first, first + count * width
    day = _first_day(interval, start, tz)
    span = (end.astimezone(tz).date() - day).days
    if interval == "1d":
        count = span
    elif interval == "1w":
        count = span // 7
    else:
        end_day = end.astimezone(tz).date()
        count = (end_day.year - day.year) * 12 + end_day.month - day.month
    # The estimate is at most one period off: step to the first period start at or
    # after the end, as period_starts' loop ends.
    count = max(count - 1, 0)
    while local_midnight(_nth_period(day, interval, count), tz) < end:
        count += 1
        _check_points(count)
    return local_midnight(day, tz), local_midnight(_nth_period(day, interval, count), tz)


def _first_day(interval: str, start: datetime, tz: ZoneInfo) -> date:
    day = start.astimezone(tz).date()
    if interval == "1w":
        day -= timedelta(days=day.weekday())
    elif interval == "1mo":
        day = day.replace(day=1)
    return day


def _nth_period(day: date, interval: str, n: int) -> date:
    if interval == "1d":
        return day + timedelta(days=n)
    if interval == "1w":
        return day + timedelta(days=7 * n)
    months = day.month - 1 + n
    return day.replace(year=day.year + months // 12, month=months % 12 + 1)


# No zone changes its offset twice within this span (tzdata's closest are months apart):
# two moments this close with the same offset have no change between them.
_OFFSET_RUN = timedelta(days=7)


def local_texts(moments: list[datetime], tz: ZoneInfo) -> list[str]:
    """Each moment (ascending) as ISO 8601 in ``tz``, as ``astimezone(tz).isoformat()``
    writes it, at a fraction of the cost: the offset is looked up only where it may
    change (bisection between moments a week or more apart), and the rest is a naive
    datetime's isoformat plus the offset's text."""
    if not moments:
        return []
    offsets: list[timedelta | None] = [None] * len(moments)

    def offset(i: int) -> timedelta:
        found = offsets[i]
        if found is None:
            found = offsets[i] = moments[i].astimezone(tz).utcoffset() or timedelta()
        return found

    def fill(lo: int, hi: int) -> None:
        if hi - lo > 1 and (moments[hi] - moments[lo] > _OFFSET_RUN or offset(lo) != offset(hi)):
            mid = (lo + hi) // 2
            offset(mid)
            fill(lo, mid)
            fill(mid, hi)
        elif offset(lo) == offset(hi):
            for i in range(lo + 1, hi):
                offsets[i] = offsets[lo]

    fill(0, len(moments) - 1)
    # Per offset: its text and seconds; per local day its date text, per second of the
    # day its time text (whole seconds: boundaries are).
    suffixes: dict[timedelta, tuple[str, int]] = {}
    days: dict[int, str] = {}
    times: dict[int, str] = {}
    out = []
    for moment, shift in zip(moments, offsets, strict=True):
        assert shift is not None
        found = suffixes.get(shift)
        if found is None:
            aware = moment.astimezone(tz)
            whole = aware.isoformat()
            suffix = whole[len(aware.replace(tzinfo=None).isoformat()) :]
            found = suffixes[shift] = (suffix, int(shift.total_seconds()))
        suffix, shift_s = found
        if moment.microsecond:
            out.append((moment.replace(tzinfo=None) + shift).isoformat() + suffix)
            continue
        day, second = divmod(int(moment.timestamp()) + shift_s, 86_400)
        day_text = days.get(day)
        if day_text is None:
            day_text = days[day] = (_EPOCH_DAY + timedelta(days=day)).isoformat() + "T"
        time_text = times.get(second)
        if time_text is None:
            hours, rest = divmod(second, 3600)
            time_text = times[second] = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
        out.append(day_text + time_text + suffix)
    return out


_EPOCH_DAY = date(1970, 1, 1)


def _next_period(day: date, interval: str) -> date:
    if interval == "1d":
        return day + timedelta(days=1)
    if interval == "1w":
        return day + timedelta(days=7)
    return (day.replace(day=1) + timedelta(days=32)).replace(day=1)


def _check_points(count: int) -> None:
    if count > MAX_POINTS:
        raise SeriesRangeError(
            f"the range holds more than {MAX_POINTS} buckets; narrow it or use a wider interval"
        )


def _sql(rows_sql: str, relation: str, epoch: Callable[[str], str], one_row_each: bool) -> str:
    """The statement: rollup rows -> continuous registers -> one row per bucket.

    Rows are the plan's (inside the boundaries, bucket number k) plus the nearest row
    before the first boundary (k = 0) and after the last (k = n + 1), which the outer
    boundaries interpolate with. A register break's step is subtracted from every
    reading at or after it (``segs``: the device's few breaks as ranges with their
    cumulative steps). Per bucket: its first and last row's readings; across buckets,
    the previous bucket's last and the next one's first reading give each boundary.
    """
    columns = ", ".join(SERIES_COLUMNS)

    def inside(segment: str, moment: str) -> str:
        return (
            f"{moment} >= {segment}.since "
            f"AND ({segment}.until IS NULL OR {moment} < {segment}.until)"
        )

    def at_boundary(boundary: str, t1: str, v1: str, t2: str, v2: str) -> str:
        # timegrid.interpolate: linear between the readings either side of the boundary
        # (moments as seconds since the epoch, each computed once per row).
        return f"({v1} + ({v2} - {v1}) * (({boundary} - {t1}) / ({t2} - {t1})))"

    start_import = (
        "CASE WHEN p_e IS NULL THEN f_imp ELSE "
        + at_boundary("lo_e", "p_e", "p_imp", "f_e", "f_imp")
        + " END"
    )
    end_import = (
        "CASE WHEN n_e IS NULL THEN l_imp ELSE "
        + at_boundary("hi_e", "l_e", "l_imp", "n_e", "n_imp")
        + " END"
    )
    start_export = (
        "CASE WHEN p_e IS NULL THEN f_exp WHEN p_exp IS NULL THEN NULL ELSE "
        + at_boundary("lo_e", "p_e", "p_exp", "f_e", "f_exp")
        + " END"
    )
    end_export = (
        "CASE WHEN n_e IS NULL THEN l_exp WHEN n_exp IS NULL THEN NULL ELSE "
        + at_boundary("hi_e", "l_e", "l_exp", "n_e", "n_exp")
        + " END"
    )
    if one_row_each:
        # One index range scan from the nearest row before the first boundary to the
        # nearest after the last; k by arithmetic (rows outside the range fall outside
        # 1..n and serve only as neighbours).
        nearest = (
            f"(SELECT {{agg}}(bucket) FROM {relation} "  # noqa: S608
            "WHERE device_id = %(device)s AND bucket {op} %({bound})s)"
        )
        raw = f"""
        SELECT {columns} FROM {relation}
        WHERE device_id = %(device)s
            AND bucket >= COALESCE({nearest.format(agg="max", op="<", bound="first")}, %(first)s)
            AND bucket <= COALESCE({nearest.format(agg="min", op=">=", bound="last")}, %(last)s)
        """  # noqa: S608
        buckets = f"""
        SELECT CAST(round(({epoch("bucket")} - %(first_e)s) / %(width_s)s) AS INTEGER) + 1 AS k,
            {epoch("bucket")} AS lo_e, {epoch("bucket")} + %(width_s)s AS hi_e,
            sample_count AS n, power_sum_w AS power_sum,
            min_power_w AS min_w, max_power_w AS max_w,
            f_e, f_imp, f_exp, l_e, l_imp, l_exp
        FROM cont
        """  # noqa: S608
    else:
        edge = (
            f"SELECT {{k}} AS k, bucket AS lo, bucket AS hi, {columns} FROM {relation} "  # noqa: S608
            "WHERE device_id = %(device)s AND {where} ORDER BY bucket {order} LIMIT 1"
        )
        before = edge.format(k="0", where="bucket < %(first)s", order="DESC")
        after = edge.format(k="%(after)s", where="bucket >= %(last)s", order="ASC")
        raw = f"""
        {rows_sql}
        UNION ALL SELECT * FROM ({before}) b
        UNION ALL SELECT * FROM ({after}) a
        """  # noqa: S608
        buckets = _GROUPED.format(lo_e=epoch("min(lo)"), hi_e=epoch("min(hi)"))
    # Only our own identifiers and fragments are formatted in; values go as parameters.
    return f"""
    WITH steps AS (
        SELECT ts,
            sum(import_kwh - prev_import_kwh) OVER (ORDER BY ts) AS imp,
            sum(CASE WHEN export_kwh IS NULL OR prev_export_kwh IS NULL THEN 0.0
                ELSE export_kwh - prev_export_kwh END) OVER (ORDER BY ts) AS exp
        FROM telemetry_registerbreak WHERE device_id = %(device)s
    ),
    segs AS (
        SELECT %(since)s AS since, (SELECT min(ts) FROM steps) AS until, 0.0 AS imp, 0.0 AS exp
        UNION ALL
        SELECT ts, lead(ts) OVER (ORDER BY ts), imp, exp FROM steps
    ),
    raw AS ({raw}),
    cont AS (
        SELECT raw.*,
            first_import_kwh - sf.imp AS f_imp, last_import_kwh - sl.imp AS l_imp,
            first_export_kwh - sf.exp AS f_exp, last_export_kwh - sl.exp AS l_exp,
            {epoch("first_ts")} AS f_e, {epoch("last_ts")} AS l_e
        FROM raw
        JOIN segs sf ON {inside("sf", "raw.first_ts")}
        JOIN segs sl ON {inside("sl", "raw.last_ts")}
    ),
    buckets AS ({buckets}),
    around AS (
        SELECT *,
            lag(l_e) OVER w AS p_e, lag(l_imp) OVER w AS p_imp, lag(l_exp) OVER w AS p_exp,
            lead(f_e) OVER w AS n_e, lead(f_imp) OVER w AS n_imp, lead(f_exp) OVER w AS n_exp
        FROM buckets WINDOW w AS (ORDER BY k)
    )
    SELECT k, n, power_sum / n, min_w, max_w,
        ({end_import}) - ({start_import}),
        ({end_export}) - ({start_export}),
        p_e, n_e
    FROM around WHERE k BETWEEN 1 AND %(after)s - 1 ORDER BY k
    """  # noqa: S608


# Several rows per bucket (days, weeks, months from hours): each bucket's first and
# last row give its readings at either end.
_GROUPED = """
    SELECT k, {lo_e} AS lo_e, {hi_e} AS hi_e,
        CAST(sum(sample_count) AS BIGINT) AS n, sum(power_sum_w) AS power_sum,
        min(min_power_w) AS min_w, max(max_power_w) AS max_w,
        max(CASE WHEN from_first = 1 THEN f_e END) AS f_e,
        max(CASE WHEN from_first = 1 THEN f_imp END) AS f_imp,
        max(CASE WHEN from_first = 1 THEN f_exp END) AS f_exp,
        max(CASE WHEN from_last = 1 THEN l_e END) AS l_e,
        max(CASE WHEN from_last = 1 THEN l_imp END) AS l_imp,
        max(CASE WHEN from_last = 1 THEN l_exp END) AS l_exp
    FROM (
        SELECT *,
            row_number() OVER (PARTITION BY k ORDER BY bucket) AS from_first,
            row_number() OVER (PARTITION BY k ORDER BY bucket DESC) AS from_last
        FROM cont
    ) ranked
    GROUP BY k
"""


def series(
    device_pk: int, interval: str, start: datetime, end: datetime, tz: ZoneInfo
) -> list[dict]:
    return series_with_dependence(device_pk, interval, start, end, tz)[0]


def series_with_dependence(
    device_pk: int,
    interval: str,
    start: datetime,
    end: datetime,
    tz: ZoneInfo,
    boundaries: list[datetime] | None = None,
) -> tuple[list[dict], Dependence]:
    """The buckets, and the span of samples they were computed from (``boundaries``:
    period_starts' answer, when the caller has it)."""
    boundaries = boundaries or period_starts(interval, start, end, tz)
    rows = bucket_rows(device_pk, interval, boundaries, tz)
    return [row.bucket for row in rows], span_of(rows, boundaries[0], boundaries[-1])


@dataclass(frozen=True)
class BucketRow:
    """One bucket of an answer: its number among the boundaries (1-based: it starts at
    boundaries[k - 1]), its figures, and the readings either side of it that it was
    interpolated with (seconds since the epoch; None where there is none)."""

    k: int
    bucket: dict
    previous_e: float | None
    next_e: float | None


def bucket_rows(
    device_pk: int, interval: str, boundaries: list[datetime], tz: ZoneInfo
) -> list[BucketRow]:
    """The buckets between ``boundaries`` (period_starts' answer) that hold samples."""
    alias = read_alias()
    plan = plan_for(alias)
    relation = "telemetry_quarter" if interval == "15m" else "telemetry_hour"
    width = _OWN_WIDTH.get(interval)
    rows_sql = "" if width is not None else plan.series_rows_sql(relation)
    sql = _sql(rows_sql, relation, plan.epoch_sql, width is not None)
    adapt = connections[alias].ops.adapt_datetimefield_value
    params = {
        "device": device_pk,
        "bounds": None if width is not None else plan.series_bounds(boundaries),
        "first": adapt(boundaries[0]),
        "last": adapt(boundaries[-1]),
        "after": len(boundaries),
        "since": adapt(datetime(1900, 1, 1, tzinfo=UTC)),
        "first_e": boundaries[0].timestamp(),
        "width_s": width.total_seconds() if width is not None else None,
    }
    with plan.series_cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    starts = local_texts([boundaries[row[0] - 1] for row in rows], tz)
    return [
        BucketRow(
            k,
            {
                "start": text,
                "import_kwh": round(imported if imported > 0.0 else 0.0, 6),
                "export_kwh": None
                if exported is None
                else round(exported if exported > 0.0 else 0.0, 6),
                "avg_power_w": round(avg_w, 1),
                "min_power_w": min_w,
                "max_power_w": max_w,
                "sample_count": count,
            },
            previous_e,
            next_e,
        )
        for text, (k, count, avg_w, min_w, max_w, imported, exported, previous_e, next_e) in zip(
            starts, rows, strict=True
        )
    ]


def span_of(rows: list[BucketRow], first: datetime, last: datetime) -> Dependence:
    """The span of samples the buckets ``rows`` (in order) between the boundaries
    ``first`` and ``last`` were computed from."""
    if not rows:
        # No bucket: only a sample inside the range can change the answer.
        return Dependence(first, last)
    # The first bucket's previous reading and the last one's next: the neighbour rows'
    # (every row between is inside). As seconds, widened by a millisecond so float
    # rounding can only make the span larger.
    first_seen, last_seen = rows[0].previous_e, rows[-1].next_e
    return Dependence(
        None if first_seen is None else _moment(first_seen) - _SLACK,
        None if last_seen is None else _moment(last_seen) + _SLACK,
    )


_SLACK = timedelta(milliseconds=1)


def _moment(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)
