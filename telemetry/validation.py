"""Lean validation of an ingest batch into insert-ready rows.

Pure functions, no database: one pass over each sample's fields with a checker per
wire kind. Per-sample serializer objects would cost several times more than the
insert itself (see docs/PERFORMANCE.md), so this is deliberately plain Python.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from edgeclient import wire

MAX_FUTURE = timedelta(minutes=5)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_MAX_ERRORS = 100  # a batch of 5000 bad samples needs no 5000-line answer


class InvalidValue(ValueError):
    pass


def _number(value: Any) -> float:
    # bool is an int in Python but never a meter reading.
    if type(value) is float:
        if not math.isfinite(value):
            raise InvalidValue("must be a finite number")
        return value
    if type(value) is int:
        if abs(value) > 1e15:
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
    return parsed


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


def validate_samples(samples: Any, now: datetime) -> tuple[list[list[Any]], list[dict]]:
    """Rows in wire.SAMPLE_FIELDS order, or the errors naming index and field.

    Either list is empty: a batch is all-or-nothing. ``now`` is injected so tests can
    pin the clock for the "not in the future" rule.
    """
    if not isinstance(samples, list):
        return [], [{"index": None, "field": "samples", "detail": "must be a list"}]
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
