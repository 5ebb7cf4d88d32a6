"""Lean validation of an ingest batch into insert-ready rows.

Pure functions, no database: one pass over each sample's fields with a checker per
wire kind. Per-sample serializer objects would cost several times more than the
insert itself (see docs/PERFORMANCE.md), so this is deliberately plain Python.
"""

from __future__ import annotations

import math
import operator
import re
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from django.conf import settings

import p1wire as wire
from telemetry import retention

MAX_FUTURE = timedelta(minutes=5)
MAX_MAGNITUDE = wire.MAX_MAGNITUDE
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_MAX_ERRORS = 100  # a batch of 5000 bad samples needs no 5000-line answer


# What the schema states (p1wire.TIMESTAMP_PATTERN); fromisoformat alone takes more.
_RFC3339 = re.compile(wire.TIMESTAMP_PATTERN).match
# The same for a whole column joined by newlines, in one call: each value is parsed by
# fromisoformat afterwards too, which refuses one holding a newline of its own.
_RFC3339_LINES = re.compile(
    rf"(?:{wire.TIMESTAMP_PATTERN.removeprefix('^').removesuffix('$')}\n)*"
).fullmatch
RFC3339_DETAIL = "must be RFC 3339, YYYY-MM-DDThh:mm:ss with Z or an offset, from 2000 to 2099"


class InvalidValue(ValueError):
    pass


def _number(value: Any) -> float:
    # bool is an int in Python but never a meter reading.
    if type(value) is float:
        if not math.isfinite(value):
            raise InvalidValue("must be a finite number")
        if abs(value) > MAX_MAGNITUDE:
            raise InvalidValue("is out of range")
        return value
    if type(value) is int:
        if abs(value) > MAX_MAGNITUDE:
            raise InvalidValue("is out of range")
        return float(value)
    raise InvalidValue("must be a number")


def _power(value: Any) -> float:
    return _number(value)


def _register(value: Any) -> float:
    number = _number(value)
    if number < 0:
        raise InvalidValue("must not be negative")
    return number


def _tariff(value: Any) -> int:
    if type(value) is not int or value not in wire.TARIFF_RANGE:
        raise InvalidValue("must be an integer from 1 to 4")
    return value


def _timestamp(value: Any) -> datetime:
    if type(value) is not str or len(value) > 40:
        raise InvalidValue("must be an ISO 8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidValue("is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise InvalidValue("must carry a UTC offset")
    if parsed < EARLIEST:
        raise InvalidValue("is before 2000")
    if not _RFC3339(value):
        raise InvalidValue(RFC3339_DETAIL)
    # In UTC: ISO 8601 allows offsets up to 23:59 and fractions of a second, PostgreSQL
    # stores neither (_STORABLE_OFFSETS); the instant is what counts.
    return parsed.astimezone(UTC)


def wire_timestamp(value: Any) -> datetime:
    """A wire-format timestamp (p1wire.TIMESTAMP) as a UTC instant, for other bodies than
    the batch (capacity.meter_history); InvalidValue says what is wrong."""
    return _timestamp(value)


_CHECKERS = {
    wire.TIMESTAMP: _timestamp,
    wire.POWER: _power,
    wire.REGISTER: _register,
    wire.MEASURE: _number,
    wire.TARIFF: _tariff,
}
FIELD_CHECKERS = {name: _CHECKERS[kind] for name, kind in wire.SAMPLE_FIELDS.items()}
FIELD_INDEX = {name: i for i, name in enumerate(wire.SAMPLE_FIELDS)}
_REQUIRED = frozenset(wire.REQUIRED_FIELDS)
_WIDTH = len(wire.SAMPLE_FIELDS)


def validate_samples(samples: Any, now: datetime) -> tuple[list[list[Any] | None], list[dict]]:
    """Columns in wire.SAMPLE_FIELDS order, or the errors naming index and field.

    A column is None when no sample has that field. Either result is empty: a batch is
    all-or-nothing. ``now`` is injected so tests can pin the "not in the future" rule.
    """
    if not isinstance(samples, list):
        return [], [{"index": None, "field": "samples", "detail": "must be a list"}]
    columns = _columns_fast(samples, now)
    if columns is not None:
        return _within_retention(columns, now)
    # Something is unusual (an error, an int, a repeated ts): go sample by sample, which
    # finds every error and also accepts what the fast path merely declined.
    rows, errors = _rows_checked_one_by_one(samples, now)
    if errors:
        return [], errors
    transposed = [list(column) for column in zip(*rows, strict=True)]
    return _within_retention(
        [c if any(v is not None for v in c) else None for c in transposed], now
    )


def _within_retention(
    columns: list[list[Any] | None], now: datetime
) -> tuple[list[list[Any] | None], list[dict]]:
    """The columns, or an error for each sample older than the raw-sample retention's
    horizon: its neighbours may be pruned, so its buckets could not be recomputed
    (telemetry.retention)."""
    earliest = retention.horizon(now)
    if earliest is None:
        return columns, []
    ts = cast(list[datetime], columns[0])
    if min(ts) >= earliest:
        return columns, []
    detail = (
        f"is older than {earliest.isoformat()}: this server keeps raw samples "
        f"{settings.RAW_SAMPLE_RETENTION_MONTHS} months (RAW_SAMPLE_RETENTION_MONTHS)"
    )
    old = [i for i, moment in enumerate(ts) if moment < earliest][:_MAX_ERRORS]
    return [], [{"index": i, "field": "ts", "detail": detail} for i in old]


def _rows_checked_one_by_one(samples: list, now: datetime) -> tuple[list[list[Any]], list[dict]]:
    latest = now + MAX_FUTURE
    rows: list[list[Any]] = []
    errors: list[dict] = []
    first_of_ts: dict[datetime, tuple[int, list[Any]]] = {}
    checkers = FIELD_CHECKERS
    positions = FIELD_INDEX
    for index, sample in enumerate(samples):
        if len(errors) >= _MAX_ERRORS:
            break
        if not isinstance(sample, dict):
            errors.append({"index": index, "field": None, "detail": "must be an object"})
            continue
        row: list[Any] = [None] * _WIDTH
        sample_ok = True
        for name, value in sample.items():
            checker = checkers.get(name)
            if checker is None:
                errors.append({"index": index, "field": name, "detail": "is not a known field"})
                sample_ok = False
                continue
            if value is None:
                if name in _REQUIRED:
                    errors.append({"index": index, "field": name, "detail": "is required"})
                    sample_ok = False
                continue
            try:
                row[positions[name]] = checker(value)
            except InvalidValue as exc:
                errors.append({"index": index, "field": name, "detail": str(exc)})
                sample_ok = False
        for name in wire.REQUIRED_FIELDS:
            if name not in sample:
                errors.append({"index": index, "field": name, "detail": "is required"})
                sample_ok = False
        if not sample_ok:
            continue
        ts = row[0]
        if ts > latest:
            errors.append(
                {"index": index, "field": "ts", "detail": "is more than 5 minutes in the future"}
            )
            continue
        seen_at, first_row = first_of_ts.setdefault(ts, (index, row))
        if seen_at != index and row != first_row:
            errors.append(
                {
                    "index": index,
                    "field": "ts",
                    "detail": f"repeats the ts of sample {seen_at} with other values",
                }
            )
            continue
        rows.append(row)
    if errors:
        return [], errors
    return rows, []


_NONE = type(None)
# Offsets PostgreSQL takes as they are: whole minutes up to 15:59 either way (naive
# timestamps, offset None, are refused later, when compared with aware ones).
_STORABLE_OFFSETS = frozenset(
    {None, *(timedelta(minutes=m) for m in range(-(16 * 60 - 1), 16 * 60))}
)
_FLOATS = frozenset({float, _NONE})
_NUMBERS = frozenset({float, int, _NONE})
_TARIFFS = frozenset({*wire.TARIFF_RANGE, None})
_KNOWN = frozenset(wire.SAMPLE_FIELDS)


def _columns_fast(samples: list, now: datetime) -> list[list[Any] | None] | None:
    """The columns of a batch that is plainly valid, using C-level builtins per column.

    Returns None as soon as anything is not plainly valid; the caller then checks sample
    by sample. Ingest of well-formed batches (the normal case) stays a few times cheaper
    than a Python loop over every field of every sample.
    """
    if not samples or set(map(type, samples)) != {dict}:
        return None
    first = samples[0]
    by_name = None
    if len(first) > 1 and set(map(len, samples)) == {len(first)}:
        # One producer writes every sample with the same fields: one C-level transpose
        # gives all columns at once. A sample with as many fields but another one
        # among them has no value for one of the first's.
        try:
            rows = list(map(operator.itemgetter(*first), samples))
        except KeyError:
            pass
        else:
            by_name = dict(zip(first, zip(*rows, strict=True), strict=True))
    keys = set(first) if by_name is not None else set().union(*samples)
    if not keys <= _KNOWN or not _REQUIRED <= keys:
        return None
    columns: list[list[Any] | None] = []
    column: list[Any] | None
    for name, kind in wire.SAMPLE_FIELDS.items():
        if name not in keys:
            columns.append(None)
            continue
        if by_name is not None:
            column = list(by_name[name])
        else:
            column = list(map(operator.methodcaller("get", name), samples))
        types = set(map(type, column))
        if _NONE in types and name in _REQUIRED:
            return None
        present = [v for v in column if v is not None] if _NONE in types else column
        if kind == wire.TIMESTAMP:
            column = _timestamps_fast(column, types)
            if column is None:
                return None
        elif kind == wire.TARIFF:
            if not types <= {int, _NONE} or not set(column) <= _TARIFFS:
                return None
        else:
            if not types <= _FLOATS:
                if not types <= _NUMBERS or max(map(abs, present)) > MAX_MAGNITUDE:
                    return None
                column = [float(v) if type(v) is int else v for v in column]
                present = [v for v in column if v is not None]
            if not all(map(math.isfinite, present)):
                return None
            if present and (max(present) > MAX_MAGNITUDE or min(present) < -MAX_MAGNITUDE):
                return None
            if kind == wire.REGISTER and present and min(present) < 0:
                return None
        columns.append(column)
    ts = cast(list[Any], columns[0])  # the timestamp: a required field, never None here
    try:
        if min(ts) < EARLIEST or max(ts) > now + MAX_FUTURE:
            return None
        for column, kind in zip(columns, wire.SAMPLE_FIELDS.values(), strict=True):
            if kind == wire.TIMESTAMP and column is not ts and column is not None:
                present = [v for v in column if v is not None]
                if present and min(present) < EARLIEST:
                    return None
    except TypeError:  # a timestamp without offset cannot be compared with one with
        return None
    if len(set(ts)) != len(ts):
        return None
    return columns


def _timestamps_fast(column: list, types: set) -> list | None:
    """Parsed timestamps; naive ones are caught later, when compared with aware ones."""
    if not types <= {str, _NONE}:
        return None
    present = [v for v in column if v is not None] if _NONE in types else column
    if present and max(map(len, present)) > 40:
        return None
    if present and not _RFC3339_LINES("\n".join(present) + "\n"):
        return None
    try:
        parsed = list(map(datetime.fromisoformat, present))
    except ValueError:
        return None
    if not set(map(datetime.utcoffset, parsed)) <= _STORABLE_OFFSETS:
        return None  # the sample-by-sample path converts such offsets to UTC
    if present is column:
        return parsed
    remaining = iter(parsed)
    return [None if v is None else next(remaining) for v in column]
