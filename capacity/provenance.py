"""Where each month's peak comes from, and the 12-month average built from them.

A month's figure is taken from the first source that has one, in this precedence:

1. ``imported``: the grid operator's own quarters (the Mijn Fluvius export,
   capacity.fluvius), when they cover at least 90% of the month: what Fluvius bills.
2. ``meter-reported``, closed: the meter's own maximum of a month it has finished
   (0-0:98.1.0 in its telegram). The meter measures every second of the month, so its
   figure stands even where our samples have gaps.
3. ``measured``: the highest quarter computed from our samples, with the share of the
   month's quarters that are complete as its coverage.
4. ``meter-reported``, running: the meter's 1-0:1.6.0 of a month we measured nothing of
   (the running month of a newly paired meter).
5. ``missing``: no figure. It counts at the 2.5 kW floor (flagged), or is left out of
   the average, as settings.CAPACITY_MISSING_MONTH says ("floor" by default: the
   floor that Fluvius applies to every month's peak, and what the answers always did;
   DESIGN.md). With every month left out the average is the floor.

The meter's running peak as each sample carried it (``monthly_power_peak_w``) is
shown beside the computed one (``meter_reported_peak``) but is not a source here: a
running figure last seen before a gap may be below the month's final maximum.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from django.conf import settings

from capacity import queries, rules
from capacity.models import MeterMonthPeak
from capacity.rules import Month
from telemetry.models import Device

IMPORTED, METER, MEASURED, MISSING = "imported", "meter-reported", "measured", "missing"
SOURCES = (IMPORTED, METER, MEASURED, MISSING)
FLOOR, EXCLUDE = "floor", "exclude"


@dataclass(frozen=True)
class MonthFigure:
    """One month's figure and where it came from, with every source's own figure."""

    month: Month
    kw: float | None  # None: missing
    source: str
    coverage: float | None  # measured: share of the month's quarters complete
    measured_kw: float | None
    meter_kw: float | None
    meter_closed: bool
    imported_kw: float | None

    @property
    def missing(self) -> bool:
        return self.kw is None

    @property
    def billed_kw(self) -> float:
        return rules.billed_kw(self.kw)

    def counted(self, policy: str) -> bool:
        return not self.missing or policy == FLOOR


def month_figures(
    device: Device, months: list[Month], rows: dict[datetime, queries.MonthRow] | None = None
) -> list[MonthFigure]:
    """The figure of each month, in the order given: three queries for any number, two
    when the caller already read the months' ``rows`` (``queries.month_rows``)."""
    tz = ZoneInfo(device.timezone)
    bounds = [m.bounds(tz) for m in months]
    # The peak and its coverage as capacity_month keeps them (what the answers always
    # showed).
    peaks = rows if rows is not None else queries.month_rows(device.pk, [s for s, _ in bounds])
    operator = queries.operator_months(device.pk, bounds)
    meter = {
        row.month: row
        for row in MeterMonthPeak.objects.filter(
            device=device, month__in=[date(m.year, m.month, 1) for m in months]
        )
    }
    figures = []
    for month, (start, end) in zip(months, bounds, strict=True):
        expected = rules.quarter_count(start, end)
        row = peaks.get(start)
        measured = None if row is None else (row.peak_kw, row.complete_quarters)
        imported = operator.get(start)
        reported = meter.get(date(month.year, month.month, 1))
        figures.append(
            _choose(
                month,
                expected,
                measured,
                imported,
                None if reported is None else reported.peak_kw,
                reported is not None and reported.closed,
            )
        )
    return figures


def _choose(
    month: Month,
    expected: int,
    measured: tuple[float, int] | None,  # (peak kW, complete quarters)
    imported: queries.OperatorMonth | None,
    meter_kw: float | None,
    meter_closed: bool,
) -> MonthFigure:
    measured_kw = None if measured is None else measured[0]
    coverage = None if measured is None else measured[1] / expected
    imported_kw = None if imported is None else imported.peak_kw
    if imported is not None and imported.quarters >= rules.COMPLETE_COVERAGE * expected:
        kw, source = imported_kw, IMPORTED
    elif meter_kw is not None and meter_closed:
        kw, source = meter_kw, METER
    elif measured_kw is not None:
        kw, source = measured_kw, MEASURED
    elif meter_kw is not None:
        kw, source = meter_kw, METER
    elif imported_kw is not None:
        # A partial import (a download that ends mid-month) is still the operator's own
        # figure, and better than a month counted as missing.
        kw, source = imported_kw, IMPORTED
    else:
        kw, source = None, MISSING
    return MonthFigure(
        month, kw, source, coverage, measured_kw, meter_kw, meter_closed, imported_kw
    )


def missing_month_policy() -> str:
    return str(settings.CAPACITY_MISSING_MONTH)


def rolling_average_kw(figures: list[MonthFigure], policy: str) -> float:
    """Mean of the billed figures of the months that count (see the module doc)."""
    counted = [f.billed_kw for f in figures if f.counted(policy)]
    return sum(counted) / len(counted) if counted else rules.MINIMUM_BILLED_KW
