"""The Flemish capacity tariff rules as pure functions (no database, no clock).

- A quarter is a clock quarter [:00, :15), [:15, :30), ...; Belgian offsets are whole
  hours, so UTC-aligned quarters are the local ones.
- Quarter power (kW) = import energy of the quarter (kWh) x 4, from the total import
  register; export never lowers a quarter.
- A quarter whose samples cover less than 90% of it is incomplete: reported, flagged,
  never invented. Coverage is the span from its first to its last sample, widened by one
  average sampling step (n samples span n-1 steps), over 15 minutes. A quarter with no
  sample has no power at all.
- A month is a calendar month in the device's time zone; a quarter belongs to the month
  it starts in. Monthly peak = highest quarter; billed peak = max(peak, 2.5 kW).
- The 12-month average is the mean of the billed peaks of the 12 months ending with the
  month asked for; a month without data counts as 2.5 kW and is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from telemetry.timegrid import FIRST_YEAR, LAST_YEAR, QUARTER, QUARTER_S, local_midnight

MINIMUM_BILLED_KW = 2.5
COMPLETE_COVERAGE = 0.9
ROLLING_MONTHS = 12


@dataclass(frozen=True)
class Month:
    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Month:
        """``YYYY-MM``; raises ValueError naming the problem."""
        try:
            year_text, month_text = text.split("-")
            month = cls(int(year_text), int(month_text))
        except ValueError:
            raise ValueError(f"{text!r} is not a month in the form YYYY-MM") from None
        if (
            len(year_text) != 4
            or not 1 <= month.month <= 12
            or not FIRST_YEAR <= month.year <= LAST_YEAR
        ):
            raise ValueError(
                f"{text!r} is not a month in the form YYYY-MM from {FIRST_YEAR} to {LAST_YEAR}"
            )
        return month

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def shift(self, months: int) -> Month:
        index = self.year * 12 + self.month - 1 + months
        return Month(index // 12, index % 12 + 1)

    def bounds(self, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """UTC instants of local midnight on the 1st of this month and of the next."""
        nxt = self.shift(1)
        return (
            local_midnight(date(self.year, self.month, 1), tz),
            local_midnight(date(nxt.year, nxt.month, 1), tz),
        )

    @classmethod
    def of(cls, moment: datetime, tz: ZoneInfo) -> Month:
        local = moment.astimezone(tz)
        return cls(local.year, local.month)


def quarter_count(start: datetime, end: datetime) -> int:
    """How many quarters [start, end) holds; start must be quarter-aligned."""
    return int((end - start) / QUARTER)


def quarter_starts(start: datetime, end: datetime) -> list[datetime]:
    """Every quarter start in [start, end); start must be quarter-aligned."""
    return [start + i * QUARTER for i in range(quarter_count(start, end))]


def coverage(first_ts: datetime, last_ts: datetime, sample_count: int) -> float:
    if sample_count < 2:
        return 0.0
    span = (last_ts - first_ts).total_seconds() * sample_count / (sample_count - 1)
    return min(1.0, span / QUARTER_S)


def billed_kw(peak_kw: float | None) -> float:
    return max(peak_kw or 0.0, MINIMUM_BILLED_KW)


@dataclass(frozen=True)
class MonthPeak:
    month: Month
    peak_kw: float | None  # None: no quarter with data in the month

    @property
    def billed_kw(self) -> float:
        return billed_kw(self.peak_kw)

    @property
    def missing(self) -> bool:
        return self.peak_kw is None


def rolling_average_kw(peaks: list[MonthPeak]) -> float:
    """Mean of the billed peaks; missing months count at the 2.5 kW floor."""
    return sum(p.billed_kw for p in peaks) / len(peaks)


@dataclass(frozen=True)
class QuarterOutlook:
    """Where the running quarter is heading, from the latest reading."""

    average_so_far_kw: float
    projected_kw: float
    threshold_kw: float
    headroom_w: float

    energy_so_far_kwh: float = 0.0

    @property
    def exceeds_threshold(self) -> bool:
        return self.projected_kw > self.threshold_kw

    @property
    def certainly_exceeds(self) -> bool:
        """The quarter can no longer end at or below the threshold (see certainly_above)."""
        return certainly_above(self.energy_so_far_kwh, self.threshold_kw)


def certainly_above(energy_so_far_kwh: float, threshold_kw: float) -> bool:
    """Even at 0 W for the rest of it, the quarter ends above ``threshold_kw``: its energy
    so far already exceeds a quarter's worth (threshold / 4 kWh). Export never lowers a
    quarter, so nothing can bring it back."""
    return energy_so_far_kwh * 4 > threshold_kw


def quarter_outlook(
    energy_so_far_kwh: float,
    elapsed_s: float,
    power_now_w: float,
    month_peak_kw: float | None,
) -> QuarterOutlook:
    """Average so far, projection to the quarter's end at the present power, and headroom.

    Headroom is how many watts could be added to the present draw for the rest of the
    quarter without setting a new billed peak (max of the month's peak and 2.5 kW).
    """
    elapsed_s = min(max(elapsed_s, 0.0), QUARTER_S)
    remaining_h = (QUARTER_S - elapsed_s) / 3600
    present_kw = max(power_now_w, 0.0) / 1000
    average_so_far = energy_so_far_kwh / (elapsed_s / 3600) if elapsed_s > 0 else present_kw
    projected = (energy_so_far_kwh + present_kw * remaining_h) * 4
    threshold = billed_kw(month_peak_kw)
    if remaining_h > 0:
        allowed_kwh = threshold / 4 - energy_so_far_kwh
        headroom = (allowed_kwh / remaining_h - present_kw) * 1000
    else:
        headroom = 0.0
    return QuarterOutlook(average_so_far, projected, threshold, headroom, energy_so_far_kwh)
