"""The answers of the capacity endpoints, as typed results (selectors).

Each function is one unit of work a test can call without HTTP; it returns dataclasses
with datetimes (UTC instants), Months and figures rounded to the precision the API
states. capacity.serializers renders them (local offsets, month text); the views only
parse parameters and check access.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, overload
from zoneinfo import ZoneInfo

from capacity import provenance, queries, rules, tariffs
from capacity.models import CapacityQuarter
from capacity.rules import Month
from telemetry.models import Device, RegisterBreak, Sample
from telemetry.segments import (
    MAX_HOUSEHOLD_POWER_W,
    REGISTER_RESOLUTION_KWH,
    Offsets,
    RegisterReading,
    is_break,
)
from telemetry.storage import plan_for
from telemetry.timegrid import QUARTER, bucket_start, day_bounds, interpolate

TOP_QUARTERS = 5
REGISTER_BREAKS_MAX = 1000
MONTH_TABLE_MAX = 36

# How the quarter the meter names as the month's peak stands to ours (meter_peak_match).
SAME_QUARTER = "same-quarter"
TIE = "tie"
DIFFERENT = "different"
METER_PEAK_MATCHES = (SAME_QUARTER, TIE, DIFFERENT)


# A figure stays a float and an absent one stays None: the answer's nullable fields are
# exactly those the dataclasses below type `float | None`.
@overload
def _round(value: float, digits: int = 3) -> float: ...
@overload
def _round(value: float | None, digits: int = 3) -> float | None: ...
def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class Quarter:
    """A quarter's power (kW, to the watt); kw None: no samples."""

    start: datetime
    kw: float | None
    coverage: float
    incomplete: bool
    sample_count: int

    @classmethod
    def of(cls, q: queries.QuarterPower) -> Quarter:
        return cls(q.start, _round(q.kw), _round(q.coverage), q.incomplete, q.sample_count)

    @classmethod
    def empty(cls, start: datetime) -> Quarter:
        return cls(start, None, 0.0, True, 0)


@dataclass(frozen=True)
class Peak:
    kw: float
    quarter_start: datetime
    incomplete: bool


@dataclass(frozen=True)
class RollingMonth:
    month: Month
    peak_kw: float | None
    billed_kw: float
    missing: bool
    source: str  # capacity.provenance.SOURCES
    coverage: float | None
    counted: bool

    @classmethod
    def of(cls, figure: provenance.MonthFigure, policy: str) -> RollingMonth:
        return cls(
            figure.month,
            _round(figure.kw),
            _round(figure.billed_kw),
            figure.missing,
            figure.source,
            _round(figure.coverage),
            figure.counted(policy),
        )


@dataclass(frozen=True)
class RollingAverage:
    kw: float
    months: list[RollingMonth]
    missing_month_policy: str


@dataclass(frozen=True)
class Provenance:
    """A month's figure, its source and every source's own figure (kW)."""

    source: str
    kw: float | None
    coverage: float | None
    measured_kw: float | None
    meter_reported_kw: float | None
    meter_closed: bool
    imported_kw: float | None

    @classmethod
    def of(cls, f: provenance.MonthFigure) -> Provenance:
        return cls(
            f.source,
            _round(f.kw),
            _round(f.coverage),
            _round(f.measured_kw),
            _round(f.meter_kw),
            f.meter_closed,
            _round(f.imported_kw),
        )


@dataclass(frozen=True)
class Tariff:
    """The price that applies to the month's year (capacity.tariffs.price_for)."""

    status: str
    network_area: str | None
    region: str | None
    year: int
    price_eur_per_kw_year: float | None
    vat_rate: float | None

    @classmethod
    def of(cls, price: tariffs.Price) -> Tariff:
        area = price.network_area
        return cls(
            price.status,
            area,
            None if area is None else tariffs.REGION_OF_AREA.get(area),
            price.year,
            None if price.eur_per_kw_year is None else float(price.eur_per_kw_year),
            None if price.vat_rate is None else float(price.vat_rate),
        )


@dataclass(frozen=True)
class MeterPeak:
    """The meter's own monthly peak as it last reported it."""

    kw: float
    ts: datetime | None


@dataclass(frozen=True)
class Completeness:
    quarters_expected: int
    quarters_with_data: int
    quarters_complete: int
    ratio: float


@dataclass(frozen=True)
class Cost:
    price_eur_per_kw_year: float
    yearly_eur: float
    monthly_eur: float
    vat_rate: float | None = None
    yearly_eur_incl_vat: float | None = None
    monthly_eur_incl_vat: float | None = None
    price_source: str = tariffs.OVERRIDE
    tariff_year: int | None = None


@dataclass(frozen=True)
class Break:
    """A register discontinuity (telemetry.models.RegisterBreak) as the API names it."""

    ts: datetime
    previous_ts: datetime
    kind: str
    previous_import_kwh: float
    import_kwh: float
    previous_export_kwh: float | None
    export_kwh: float | None
    import_step_kwh: float
    export_step_kwh: float | None
    unmeasured_s: float

    @classmethod
    def of(cls, found: RegisterBreak) -> Break:
        return cls(
            ts=found.ts,
            previous_ts=found.prev_ts,
            kind=found.kind,
            previous_import_kwh=found.prev_import_kwh,
            import_kwh=found.import_kwh,
            previous_export_kwh=found.prev_export_kwh,
            export_kwh=found.export_kwh,
            import_step_kwh=_round(found.import_step_kwh, 6),
            export_step_kwh=_round(found.export_step_kwh, 6),
            unmeasured_s=round((found.ts - found.prev_ts).total_seconds(), 3),
        )


@dataclass(frozen=True)
class MonthReport:
    device_id: str
    month: Month
    timezone: str
    peak: Peak | None
    billed_peak_kw: float
    rolling_average: RollingAverage
    meter_reported_peak: MeterPeak | None
    completeness: Completeness
    top_quarters: list[Quarter]
    estimated_cost: Cost | None
    register_breaks: list[Break]
    tariff: Tariff | None = None
    meter_peak_match: str | None = None  # METER_PEAK_MATCHES


@dataclass(frozen=True)
class MonthTableRow:
    month: Month
    peak_kw: float | None
    peak_quarter_start: datetime | None
    billed_peak_kw: float
    meter_reported_peak: MeterPeak | None
    provenance: Provenance | None = None
    rolling_average_kw: float | None = None
    estimated_cost: Cost | None = None
    meter_peak_match: str | None = None  # METER_PEAK_MATCHES


@dataclass(frozen=True)
class MonthTable:
    device_id: str
    timezone: str
    months: list[MonthTableRow]  # newest first


@dataclass(frozen=True)
class DayQuarters:
    device_id: str
    date: date
    timezone: str
    quarters: list[Quarter]


@dataclass(frozen=True)
class RegisterBreaks:
    device_id: str
    timezone: str
    register_breaks: list[Break]


def window_months(month: Month) -> list[Month]:
    """The 12 months ending with ``month``, oldest first."""
    return [month.shift(-i) for i in range(rules.ROLLING_MONTHS - 1, -1, -1)]


def rolling_window(device: Device, month: Month) -> list[provenance.MonthFigure]:
    """The figures of the 12 months ending with ``month`` (oldest first)."""
    return provenance.month_figures(device, window_months(month))


def rolling_average(figures: list[provenance.MonthFigure], policy: str) -> RollingAverage:
    return RollingAverage(
        _round(provenance.rolling_average_kw(figures, policy)),
        [RollingMonth.of(f, policy) for f in figures],
        policy,
    )


def month_report(device: Device, month: Month) -> MonthReport:
    tz = ZoneInfo(device.timezone)
    start, end = month.bounds(tz)
    top = queries.top_quarters(device.pk, start, end, TOP_QUARTERS)
    peak = top[0] if top else None
    policy = provenance.missing_month_policy()
    # One read of the window's capacity_month rows for its figures, this month's quarter
    # counts and its meter peak.
    months = window_months(month)
    rows = queries.month_rows(device.pk, [m.bounds(tz)[0] for m in months])
    window = provenance.month_figures(device, months, rows)
    average = provenance.rolling_average_kw(window, policy)
    price = _price(device, month)
    expected = rules.quarter_count(start, end)
    row = rows.get(start)
    with_data, complete = (0, 0) if row is None else (row.quarters_with_data, row.complete_quarters)
    meter_peak = _meter_peak(queries.meter_peaks_of(rows).get(start))
    ours = None if peak is None else (_round(peak.kw), peak.start)
    return MonthReport(
        device_id=device.device_id,
        month=month,
        timezone=device.timezone,
        peak=None if peak is None else Peak(_round(peak.kw), peak.start, peak.incomplete),
        billed_peak_kw=_round(rules.billed_kw(None if peak is None else peak.kw)),
        rolling_average=rolling_average(window, policy),
        meter_reported_peak=meter_peak,
        completeness=Completeness(
            expected, with_data, complete, _round(complete / expected if expected else 0.0)
        ),
        top_quarters=[Quarter.of(q) for q in top],
        estimated_cost=estimated_cost(price, average),
        register_breaks=[Break.of(b) for b in register_breaks_between(device, start, end)],
        tariff=None if price is None else Tariff.of(price),
        meter_peak_match=meter_peak_match(
            ours, meter_peak, _quarter_kw(device, [meter_peak]), (start, end)
        ),
    )


def _price(device: Device, month: Month) -> tariffs.Price | None:
    return tariffs.price_for(
        device.network_area,
        device.capacity_price_eur_per_kw_year,
        device.social_tariff,
        month.year,
    )


def register_breaks_between(
    device: Device, start: datetime | None = None, end: datetime | None = None
) -> list[RegisterBreak]:
    """The device's register breaks whose new segment starts in [start, end), oldest
    first (at most REGISTER_BREAKS_MAX: a meter is replaced a few times in its life)."""
    found = RegisterBreak.objects.filter(device=device).order_by("ts")
    if start is not None:
        found = found.filter(ts__gte=start)
    if end is not None:
        found = found.filter(ts__lt=end)
    return list(found[:REGISTER_BREAKS_MAX])


def register_breaks(device: Device, start: datetime | None, end: datetime | None) -> RegisterBreaks:
    return RegisterBreaks(
        device.device_id,
        device.timezone,
        [Break.of(b) for b in register_breaks_between(device, start, end)],
    )


def month_table(device: Device, last: Month, count: int) -> MonthTable:
    """Peak, billed peak, the meter's own peak, the month's provenance and its cost of
    ``count`` months ending with ``last`` (newest first). A fixed number of queries
    whatever ``count``: the computed peaks, the meter's peaks, our power of the quarters
    the meter names, and the figures of the months and the 11 before the oldest (for
    each row's 12-month average)."""
    tz = ZoneInfo(device.timezone)
    months = [last.shift(-i) for i in range(count)]
    bounds = [m.bounds(tz) for m in months]
    span = [last.shift(-i) for i in range(count + rules.ROLLING_MONTHS - 2, -1, -1)]
    # The rows of the span (the months and the 11 before) serve both.
    found = queries.month_rows(device.pk, [m.bounds(tz)[0] for m in span])
    found_meter = queries.meter_peaks_of(found)
    meter_peaks = {start: _meter_peak(found_meter.get(start)) for start, _ in bounds}
    meter_quarters = _quarter_kw(device, meter_peaks.values())
    policy = provenance.missing_month_policy()
    figures = provenance.month_figures(device, span, found)  # oldest first
    rows = []
    for index, (month, (start, end)) in enumerate(zip(months, bounds, strict=True)):
        row = found.get(start)
        newest = len(span) - 1 - index
        window = figures[newest - rules.ROLLING_MONTHS + 1 : newest + 1]
        average = provenance.rolling_average_kw(window, policy)
        ours = None if row is None else (_round(row.peak_kw), row.peak_bucket)
        rows.append(
            MonthTableRow(
                month=month,
                peak_kw=None if row is None else _round(row.peak_kw),
                peak_quarter_start=None if row is None else row.peak_bucket,
                billed_peak_kw=_round(rules.billed_kw(None if row is None else row.peak_kw)),
                meter_reported_peak=meter_peaks[start],
                provenance=Provenance.of(figures[newest]),
                rolling_average_kw=_round(average),
                estimated_cost=estimated_cost(_price(device, month), average),
                meter_peak_match=meter_peak_match(
                    ours, meter_peaks[start], meter_quarters, (start, end)
                ),
            )
        )
    return MonthTable(device.device_id, device.timezone, rows)


def estimated_cost(price: tariffs.Price | None, average_kw: float) -> Cost | None:
    """Capacity cost at the 12-month average, for a year and per month, at the price of
    the month's own year; None: no price (none set, none published, or no capacity
    tariff in the region: ``tariff`` says which)."""
    if price is None or price.eur_per_kw_year is None:
        return None
    per_kw = price.eur_per_kw_year
    yearly = float(per_kw) * average_kw
    vat = None if price.vat_rate is None else float(price.vat_rate)
    return Cost(
        float(per_kw),
        round(yearly, 2),
        round(yearly / 12, 2),
        vat,
        None if vat is None else round(yearly * (1 + vat), 2),
        None if vat is None else round(yearly * (1 + vat) / 12, 2),
        price.status,
        price.year,
    )


def _meter_peak(found: queries.MeterPeakRow | None) -> MeterPeak | None:
    return None if found is None else MeterPeak(_round(found.peak_w / 1000), found.ts)


def meter_quarter_start(ts: datetime) -> datetime:
    """The start of the quarter a meter's peak timestamp names.

    The meter stamps its peak with the end of the quarter (a quarter ending at 18:15 is
    stamped 18:15:00), so a stamp on the quarter grid names the quarter before it. A
    stamp off the grid is read as naming the quarter that holds it.
    """
    return bucket_start(ts - timedelta(microseconds=1), QUARTER)


def _quarter_kw(device: Device, meter_peaks: Iterable[MeterPeak | None]) -> dict[datetime, float]:
    """Our power (kW) of the quarters the meter peaks name, by quarter start; absent: we
    have no samples in it. One query for any number of months."""
    starts = {meter_quarter_start(p.ts) for p in meter_peaks if p is not None and p.ts}
    if not starts:
        return {}
    found = CapacityQuarter.objects.filter(device_id=device.pk, bucket__in=sorted(starts))
    return dict(found.values_list("bucket", "kw"))


def meter_peak_match(
    ours: tuple[float, datetime] | None,
    meter: MeterPeak | None,
    quarter_kw: dict[datetime, float],
    month_bounds: tuple[datetime, datetime],
) -> str | None:
    """Whether the meter names our peak quarter (``ours``: its kW as the answer shows it
    and its start): same-quarter; another quarter of the month whose power, as the
    answer rounds it, equals our peak (we name the earliest of equal quarters, the meter
    may name another): tie; else different. None: no peak of ours, or the meter named
    no quarter."""
    if ours is None or meter is None or meter.ts is None:
        return None
    peak_kw, peak_start = ours
    start = meter_quarter_start(meter.ts)
    if start == peak_start:
        return SAME_QUARTER
    theirs = quarter_kw.get(start)
    in_month = month_bounds[0] <= start < month_bounds[1]
    return TIE if in_month and theirs is not None and _round(theirs) == peak_kw else DIFFERENT


def day_quarters(device: Device, day: date) -> DayQuarters:
    tz = ZoneInfo(device.timezone)
    start, end = day_bounds(day, tz)
    found = {q.start: q for q in queries.quarter_powers(device.pk, start, end)}
    quarters = [
        Quarter.empty(s) if (q := found.get(s)) is None else Quarter.of(q)
        for s in rules.quarter_starts(start, end)
    ]
    return DayQuarters(device.device_id, day, device.timezone, quarters)


_LATEST_FIELDS = (
    "ts",
    "power_w",
    "energy_import_kwh",
    "energy_export_kwh",
    "tariff",
    "power_l1_w",
    "power_l2_w",
    "power_l3_w",
    "average_power_15m_w",
    "monthly_power_peak_w",
    "monthly_power_peak_ts",
)


@dataclass(frozen=True)
class QuarterSoFar:
    """The running quarter's outlook (capacity.rules.quarter_outlook), rounded."""

    start: datetime
    end: datetime
    average_so_far_kw: float
    projected_kw: float
    threshold_kw: float
    headroom_w: float
    exceeds_threshold: bool
    energy_so_far_kwh: float = 0.0
    certainly_exceeds_threshold: bool = False


@dataclass(frozen=True)
class MonthSoFar:
    month: Month
    peak_so_far_kw: float | None
    billed_peak_so_far_kw: float


@dataclass(frozen=True)
class Realtime:
    """latest: the newest sample's _LATEST_FIELDS as stored; None (and no quarter or
    month): the device sent none yet."""

    device_id: str
    timezone: str
    latest: dict[str, Any] | None
    quarter: QuarterSoFar | None = None
    month: MonthSoFar | None = None


@dataclass(frozen=True)
class RealtimeBasis:
    """What a realtime answer reads from the database besides its latest sample.

    It holds for every newer sample of the same quarter until the data under it changes:
    a sample at or before ``latest_ts``, a register break, a quarter of the month before
    this one. Those come only from a batch that is not a pure append, the steps over a
    span that reaches ``opening_ts`` or writes a break, and a capacity rebuild, which all
    drop the cached answer (capacity.realtime), so a live batch's answer can be made
    from the basis and the batch's own readings alone (``basis_after``).
    """

    device_timezone: str
    quarter_start: datetime
    # The quarter's first sample, from which its start's register is interpolated.
    opening_ts: datetime
    latest_ts: datetime
    # The continuous import register at the quarter's start.
    start_register: float
    # What the stored register breaks take from a raw import reading after latest_ts.
    import_step: float
    month: Month
    peak_before_kw: float | None
    # The latest sample's registers as stored (raw), where a batch's readings go on from.
    latest_import_kwh: float
    latest_export_kwh: float | None


def realtime(device: Device, now: datetime) -> Realtime:
    """Latest reading, the running quarter's outlook and the month's peak so far.

    capacity.realtime caches its rendering; the latest reading's age is added when it
    is served.
    """
    return realtime_with_basis(device)[0]


def realtime_with_basis(device: Device) -> tuple[Realtime, RealtimeBasis | None]:
    """The realtime answer from the database, and its basis (None: no sample yet)."""
    tz = ZoneInfo(device.timezone)
    latest = _latest_sample(device)
    if latest is None:
        return Realtime(device.device_id, device.timezone, None), None
    ts = latest["ts"]
    quarter_start = bucket_start(ts, QUARTER)
    month = Month.of(quarter_start, tz)
    month_start, _ = month.bounds(tz)
    opening = queries.quarter_opening(device.pk, quarter_start, month_start)
    # Registers read across register segments: a meter swapped within the running
    # quarter adds no energy (telemetry.segments).
    offsets = Offsets.of_device(device.pk)
    basis = RealtimeBasis(
        device_timezone=device.timezone,
        quarter_start=quarter_start,
        opening_ts=opening.after[0] if opening.after is not None else ts,
        latest_ts=ts,
        start_register=_register_at(quarter_start, opening, offsets),
        import_step=offsets.import_step_at(ts),
        month=month,
        peak_before_kw=opening.peak_before_kw,
        latest_import_kwh=latest["energy_import_kwh"],
        latest_export_kwh=latest["energy_export_kwh"],
    )
    return realtime_from(device.device_id, latest, basis), basis


def basis_after(
    basis: RealtimeBasis,
    readings: Sequence[RegisterReading],
    device_timezone: str,
    *,
    across_quarters: bool = True,
) -> RealtimeBasis | None:
    """The basis for the answer after a batch that goes on from the basis' latest sample
    (``readings``: the batch's registers in time order); None where the answer must be
    computed from the database instead.

    Within the running quarter the basis holds as it is, with the batch's newest sample
    as its latest. A batch that goes on into a later quarter (``across_quarters``)
    carries it over, made as the database will make it once the worker's steps have seen
    the batch: every quarter the batch finishes gets the power capacity.queries.
    quarters_sql gives it (its end's register interpolated to the next reading, clamped
    at 0 as capacity.materialize stores it), and those of the new quarter's month go into
    the peak before it. Without this, each open dashboard's first read after a quarter's
    start computes its answer from the database, all of them within one upload interval.

    None: another zone, a reading not after the latest one, a pair of readings that
    telemetry.segments will call a break (the steps record it and the answer is computed
    again), or a finished quarter whose energy no household draws: less than nothing or
    more than MAX_HOUSEHOLD_POWER_W for the quarter, which is what a meter swapped earlier
    in the quarter and not yet recorded by the steps looks like from here."""
    if not readings or device_timezone != basis.device_timezone:
        return None
    previous = RegisterReading(basis.latest_ts, basis.latest_import_kwh, basis.latest_export_kwh)
    if readings[0].ts <= previous.ts:
        return None
    if any(is_break(a, b) for a, b in itertools.pairwise((previous, *readings))):
        return None
    newest = readings[-1]
    if bucket_start(newest.ts, QUARTER) == basis.quarter_start:
        return dataclasses.replace(
            basis,
            latest_ts=newest.ts,
            latest_import_kwh=newest.import_kwh,
            latest_export_kwh=newest.export_kwh,
        )
    if not across_quarters:
        return None
    tz = ZoneInfo(device_timezone)
    step = basis.import_step

    def continuous(reading: RegisterReading) -> tuple[datetime, float]:
        return reading.ts, reading.import_kwh - step

    month = Month.of(bucket_start(newest.ts, QUARTER), tz)
    peak = basis.peak_before_kw if basis.month == month else None
    quarter, start_register, opening_ts = (
        basis.quarter_start,
        basis.start_register,
        basis.opening_ts,
    )
    for reading in readings:
        starts = bucket_start(reading.ts, QUARTER)
        if starts != quarter:
            end_register = interpolate(quarter + QUARTER, continuous(previous), continuous(reading))
            energy = end_register - start_register
            if not -REGISTER_RESOLUTION_KWH <= energy <= _MOST_KWH_PER_QUARTER:
                return None
            kw = max(energy * 4, 0.0)
            if Month.of(quarter, tz) == month:
                peak = kw if peak is None else max(peak, kw)
            start_register = interpolate(starts, continuous(previous), continuous(reading))
            quarter, opening_ts = starts, reading.ts
        previous = reading
    return RealtimeBasis(
        device_timezone=device_timezone,
        quarter_start=quarter,
        opening_ts=opening_ts,
        latest_ts=previous.ts,
        start_register=start_register,
        import_step=step,
        month=month,
        peak_before_kw=peak,
        latest_import_kwh=previous.import_kwh,
        latest_export_kwh=previous.export_kwh,
    )


_MOST_KWH_PER_QUARTER = MAX_HOUSEHOLD_POWER_W / 1000 / 4 + REGISTER_RESOLUTION_KWH


def realtime_from(device_id: str, latest: dict[str, Any], basis: RealtimeBasis) -> Realtime:
    """The answer for the latest sample (its _LATEST_FIELDS as stored) on a basis that
    holds for it; no database."""
    ts = latest["ts"]
    # The running quarter is excluded from "the peak so far": it is what we project.
    peak_so_far = rules.MonthPeak(basis.month, basis.peak_before_kw)
    # As Offsets.import_at: no break lies after the basis' latest sample.
    latest_register = latest["energy_import_kwh"] - basis.import_step
    outlook = rules.quarter_outlook(
        energy_so_far_kwh=max(latest_register - basis.start_register, 0.0),
        elapsed_s=(ts - basis.quarter_start).total_seconds(),
        power_now_w=latest["power_w"],
        month_peak_kw=peak_so_far.peak_kw,
    )
    quarter_start = basis.quarter_start
    return Realtime(
        device_id,
        basis.device_timezone,
        {name: latest[name] for name in _LATEST_FIELDS},
        QuarterSoFar(
            start=quarter_start,
            end=quarter_start + QUARTER,
            average_so_far_kw=_round(outlook.average_so_far_kw),
            projected_kw=_round(outlook.projected_kw),
            threshold_kw=_round(outlook.threshold_kw),
            headroom_w=_round(outlook.headroom_w, 0),
            exceeds_threshold=outlook.exceeds_threshold,
            energy_so_far_kwh=_round(outlook.energy_so_far_kwh, 6),
            certainly_exceeds_threshold=outlook.certainly_exceeds,
        ),
        MonthSoFar(basis.month, _round(peak_so_far.peak_kw), _round(peak_so_far.billed_kw)),
    )


def _latest_sample(device: Device) -> dict[str, Any] | None:
    newest = Sample.objects.filter(device=device).order_by("-ts").values(*_LATEST_FIELDS)
    bound = plan_for().newest_sample_bound(device.pk)
    found = None if bound is None else newest.filter(ts__gte=bound).first()
    # Unbounded where the plan gives no bound, or its bound had nothing after it (raw
    # samples pruned under rollups that remain).
    return found if found is not None else newest.first()


def _register_at(boundary: datetime, opening: queries.QuarterOpening, offsets: Offsets) -> float:
    """Continuous import register at a boundary from the two samples around it."""
    if opening.after is None:  # cannot happen: the latest sample is at or after it
        raise ValueError("no sample at or after the quarter start")

    def continuous(sample: tuple[datetime, float]) -> tuple[datetime, float]:
        return sample[0], offsets.import_at(sample[0], sample[1])

    return interpolate(
        boundary,
        None if opening.before is None else continuous(opening.before),
        continuous(opening.after),
    )
