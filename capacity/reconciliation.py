"""Our quarters against the grid operator's (capacity.fluvius): per month, both peaks,
the largest difference of a quarter both have, and the quarters one side lacks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from capacity.models import CapacityQuarter, OperatorQuarter
from capacity.rules import Month
from telemetry.models import Device

# Of the quarters one side lacks, the answer lists the first few (the counts are whole).
LISTED_QUARTERS = 10


@dataclass(frozen=True)
class QuarterDifference:
    start: datetime
    ours_kw: float
    operator_kw: float
    difference_kw: float  # ours - operator


@dataclass(frozen=True)
class MonthReconciliation:
    month: Month
    our_peak_kw: float | None
    our_peak_quarter_start: datetime | None
    operator_peak_kw: float | None
    operator_peak_quarter_start: datetime | None
    quarters_both: int
    largest_difference: QuarterDifference | None
    only_ours: int
    only_operator: int
    only_ours_first: list[datetime]
    only_operator_first: list[datetime]


@dataclass(frozen=True)
class Reconciliation:
    device_id: str
    timezone: str
    months: list[MonthReconciliation]  # newest first


def reconcile(device: Device, last: Month, count: int) -> Reconciliation:
    """``count`` months ending with ``last``: two queries, one per side."""
    tz = ZoneInfo(device.timezone)
    months = [last.shift(-i) for i in range(count)]
    bounds = [m.bounds(tz) for m in months]
    low, high = bounds[-1][0], bounds[0][1]
    ours = dict(
        CapacityQuarter.objects.filter(
            device_id=device.pk, bucket__gte=low, bucket__lt=high
        ).values_list("bucket", "kw")
    )
    theirs = dict(
        OperatorQuarter.objects.filter(device=device, bucket__gte=low, bucket__lt=high)
        .order_by("bucket")
        .values_list("bucket", "kw")
    )
    return Reconciliation(
        device.device_id,
        device.timezone,
        [
            _month(m, start, end, ours, theirs)
            for m, (start, end) in zip(months, bounds, strict=True)
        ],
    )


def _month(
    month: Month,
    start: datetime,
    end: datetime,
    ours: dict[datetime, float],
    theirs: dict[datetime, float],
) -> MonthReconciliation:
    mine = {b: kw for b, kw in ours.items() if start <= b < end}
    other = {b: kw for b, kw in theirs.items() if start <= b < end}
    both = sorted(mine.keys() & other.keys())
    largest = None
    for b in both:
        difference = mine[b] - other[b]
        if largest is None or abs(difference) > abs(largest.difference_kw):
            largest = QuarterDifference(
                b, round(mine[b], 3), round(other[b], 3), round(difference, 3)
            )
    only_ours = sorted(mine.keys() - other.keys())
    only_operator = sorted(other.keys() - mine.keys())
    our_peak = _peak(mine)
    operator_peak = _peak(other)
    return MonthReconciliation(
        month,
        None if our_peak is None else round(our_peak[1], 3),
        None if our_peak is None else our_peak[0],
        None if operator_peak is None else round(operator_peak[1], 3),
        None if operator_peak is None else operator_peak[0],
        len(both),
        largest,
        len(only_ours),
        len(only_operator),
        only_ours[:LISTED_QUARTERS],
        only_operator[:LISTED_QUARTERS],
    )


def _peak(quarters: dict[datetime, float]) -> tuple[datetime, float] | None:
    """The highest quarter; the earliest wins a tie (as capacity.queries)."""
    if not quarters:
        return None
    return min(quarters.items(), key=lambda item: (-item[1], item[0]))
