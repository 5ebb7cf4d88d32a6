"""The Belgian demand records of a raw DSMR telegram (e-MUCS / Fluvius P1 companion).

A Fluvius meter prints, beside the registers the JSON API already gives:

- ``1-0:1.4.0(02.351*kW)``: the current quarter's average demand so far;
- ``1-0:1.6.0(200509134558S)(02.589*kW)``: this month's maximum demand and when its
  quarter ended;
- ``0-0:98.1.0(3)(1-0:1.6.0)(1-0:1.6.0)(200501000000S)(200423192538S)(03.695*kW)...``:
  the history of monthly maxima. After the count and the two capture-object ids
  (both 1-0:1.6.0) come triples of (the billing period's stamp, when its maximum
  occurred, the maximum). The period stamp is 00:00 on the first day *after* the month
  the maximum belongs to: 200501000000S closes April 2020, whose maximum fell on
  2020-04-23. A meter keeps up to 13 months.

Syntax as parsed by dsmr_parser (ndokter/dsmr_parser, dsmr_parser/parsers.py
``MaxDemandParser``, obis_references.py ``BELGIUM_MAXIMUM_DEMAND_13_MONTHS``) and shown
by its Fluvius test telegrams (test/example_telegrams.py ``TELEGRAM_FLUVIUS_V171`` and
``TELEGRAM_FLUVIUS_V171_ALT``). The second holds a month the meter has no maximum for:
``(230801000000S)(632525252525W)(00.000*kW)``, the DSMR "no time" placeholder with
zero; that month is left out. The two telegrams list their months in opposite orders,
so nothing here depends on the order. Time stamps are ``YYMMDDhhmmss`` and a season
letter: S summer time (UTC+2), W winter time (UTC+1), per DSMR 5.0.2 section 6.4.

Other meters use 0-0:98.1.0 for something else (a Hungarian or Lithuanian meter prints
its billing-period registers there: ``0-0:98.1.0(250301000000W)(007453.019*kWh)...``,
p1meter.eu's ADA telegram and dsmr_parser's E.ON Hungary test telegram): only a record
whose capture objects are 1-0:1.6.0 is read as monthly maxima.

No Django and no I/O: the edge reads the telegram (``/api/telegram`` on API v2,
``/api/v1/telegram`` on v1) and hands the text here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

_SUMMER = timezone(timedelta(hours=2))
_WINTER = timezone(timedelta(hours=1))
_STAMP = re.compile(r"^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})([SW])$")
_KW = re.compile(r"^(\d+(?:\.\d+)?)\*kW$")
# A line: OBIS code, then one or more parenthesised values.
_LINE = re.compile(r"^(\d+-\d+:\d+\.\d+\.\d+)((?:\([^()]*\))+)\s*$")
_VALUES = re.compile(r"\(([^()]*)\)")
_CAPTURE_OBJECT = "1-0:1.6.0"
# Far above any household connection: a figure beyond it is a misread, not a peak.
_MAX_KW = 1000.0


@dataclass(frozen=True)
class MonthlyMaximum:
    """One month's maximum quarter demand as the meter recorded it."""

    month: str  # YYYY-MM, the calendar month in Belgian time
    kw: float
    at: datetime | None  # when its quarter ended; None: the meter printed no time


@dataclass(frozen=True)
class Demand:
    """The telegram's demand records; each is None (or empty) when the meter has none."""

    average_kw: float | None  # 1-0:1.4.0
    month_maximum: MonthlyMaximum | None  # 1-0:1.6.0, the running month
    history: tuple[MonthlyMaximum, ...]  # 0-0:98.1.0, oldest first

    def wire_months(self) -> list[dict[str, Any]]:
        """The history as p1wire.meter_history_payload takes it, oldest first."""
        return [_wire(m) for m in self.history]


def parse_stamp(text: str) -> datetime | None:
    """A DSMR time stamp as an aware datetime; None for a placeholder or a bad one."""
    found = _STAMP.match(text.strip())
    if found is None:
        return None
    yy, mo, dd, hh, mi, ss = (int(g) for g in found.groups()[:6])
    try:
        return datetime(
            2000 + yy, mo, dd, hh, mi, ss, tzinfo=_SUMMER if found.group(7) == "S" else _WINTER
        )
    except ValueError:  # 632525252525W and the like
        return None


def _kw(text: str) -> float | None:
    found = _KW.match(text.strip())
    if found is None:
        return None
    value = float(found.group(1))
    return value if value <= _MAX_KW else None


def _month_closed_by(stamp: datetime) -> str:
    """The month a billing-period stamp closes: the one before its (local) date."""
    previous = date(stamp.year, stamp.month, stamp.day) - timedelta(days=1)
    return f"{previous.year:04d}-{previous.month:02d}"


def _records(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for raw in text.replace("\r", "").split("\n"):
        line = _LINE.match(raw.strip())
        if line is not None:
            found.setdefault(line.group(1), _VALUES.findall(line.group(2)))
    return found


def parse_demand(text: str) -> Demand:
    """The demand records of one telegram. Lines it does not know or cannot read are
    skipped: an odd record never costs the others."""
    records = _records(text)
    average = None
    if (values := records.get("1-0:1.4.0")) and len(values) == 1:
        average = _kw(values[0])
    maximum = None
    if (values := records.get("1-0:1.6.0")) and len(values) == 2:
        at, kw = parse_stamp(values[0]), _kw(values[1])
        if at is not None and kw is not None:
            maximum = MonthlyMaximum(f"{at.year:04d}-{at.month:02d}", kw, at)
    return Demand(average, maximum, _history(records.get("0-0:98.1.0")))


def _history(values: list[str] | None) -> tuple[MonthlyMaximum, ...]:
    if not values or len(values) < 3 or values[1:3] != [_CAPTURE_OBJECT, _CAPTURE_OBJECT]:
        return ()
    try:
        count = int(values[0])
    except ValueError:
        return ()
    triples = values[3:]
    by_month: dict[str, MonthlyMaximum] = {}
    for index in range(min(count, len(triples) // 3)):
        period, occurred, figure = triples[3 * index : 3 * index + 3]
        closes, kw = parse_stamp(period), _kw(figure)
        if closes is None or kw is None:
            continue
        at = parse_stamp(occurred)
        if at is None and kw == 0:
            continue  # a month the meter holds no maximum for (see the module doc)
        month = _month_closed_by(closes)
        by_month[month] = MonthlyMaximum(month, kw, at)
    return tuple(by_month[m] for m in sorted(by_month))


def _wire(m: MonthlyMaximum) -> dict[str, Any]:
    return {
        "month": m.month,
        "peak_kw": m.kw,
        "peak_ts": None if m.at is None else m.at.isoformat(),
    }
