"""The answers of the capacity endpoints, as plain dicts (JSON-ready).

Each function is one unit of work a test can call without HTTP; the views only parse
parameters and check access.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from capacity import queries, rules
from capacity.rules import Month
from telemetry.models import Device, RegisterBreak, Sample
from telemetry.segments import Offsets
from telemetry.timegrid import bucket_start

TOP_QUARTERS = 5


def _local(moment: datetime | None, tz: ZoneInfo) -> str | None:
    return None if moment is None else moment.astimezone(tz).isoformat()


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _quarter_json(q: queries.QuarterPower, tz: ZoneInfo) -> dict:
    return {
        "start": _local(q.start, tz),
        "kw": _round(q.kw),
        "coverage": _round(q.coverage),
        "incomplete": q.incomplete,
        "sample_count": q.sample_count,
    }


def rolling_window(device: Device, month: Month) -> list[rules.MonthPeak]:
    """Peaks of the 12 months ending with ``month`` (oldest first)."""
    tz = ZoneInfo(device.timezone)
    months = [month.shift(-i) for i in range(rules.ROLLING_MONTHS - 1, -1, -1)]
    return queries.month_peaks(device.pk, [(m, *m.bounds(tz)) for m in months])


def month_report(device: Device, month: Month) -> dict:
    tz = ZoneInfo(device.timezone)
    start, end = month.bounds(tz)
    quarters = queries.month_quarters(device.pk, start, end, TOP_QUARTERS)
    top = quarters.top
    peak = top[0] if top else None
    window = rolling_window(device, month)
    average = rules.rolling_average_kw(window)
    expected = len(rules.quarter_starts(start, end))
    with_data, complete = quarters.with_data, quarters.complete
    return {
        "device_id": device.device_id,
        "month": str(month),
        "timezone": device.timezone,
        "peak": None
        if peak is None
        else {
            "kw": _round(peak.kw),
            "quarter_start": _local(peak.start, tz),
            "incomplete": peak.incomplete,
        },
        "billed_peak_kw": _round(rules.billed_kw(None if peak is None else peak.kw)),
        "rolling_average": {
            "kw": _round(average),
            "months": [
                {
                    "month": str(p.month),
                    "peak_kw": _round(p.peak_kw),
                    "billed_kw": _round(p.billed_kw),
                    "missing": p.missing,
                }
                for p in window
            ],
        },
        "meter_reported_peak": meter_reported_peak(device, start, end, tz),
        "completeness": {
            "quarters_expected": expected,
            "quarters_with_data": with_data,
            "quarters_complete": complete,
            "ratio": _round(complete / expected if expected else 0.0),
        },
        "top_quarters": [_quarter_json(q, tz) for q in top],
        "estimated_cost": estimated_cost(device.capacity_price_eur_per_kw_year, average),
        "register_breaks": [
            register_break_json(b, tz) for b in register_breaks_between(device, start, end)
        ],
    }


REGISTER_BREAKS_MAX = 1000


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


def register_break_json(found: RegisterBreak, tz: ZoneInfo) -> dict:
    export_step = found.export_step_kwh
    return {
        "ts": _local(found.ts, tz),
        "previous_ts": _local(found.prev_ts, tz),
        "kind": found.kind,
        "previous_import_kwh": found.prev_import_kwh,
        "import_kwh": found.import_kwh,
        "previous_export_kwh": found.prev_export_kwh,
        "export_kwh": found.export_kwh,
        "import_step_kwh": _round(found.import_step_kwh, 6),
        "export_step_kwh": _round(export_step, 6),
        "unmeasured_s": round((found.ts - found.prev_ts).total_seconds(), 3),
    }


def register_breaks(device: Device, start: datetime | None, end: datetime | None) -> dict:
    tz = ZoneInfo(device.timezone)
    return {
        "device_id": device.device_id,
        "timezone": device.timezone,
        "register_breaks": [
            register_break_json(b, tz) for b in register_breaks_between(device, start, end)
        ],
    }


MONTH_TABLE_MAX = 36


def month_table(device: Device, last: Month, count: int) -> dict:
    """Peak, billed peak and the meter's own peak of ``count`` months ending with ``last``
    (newest first): one query for the computed peaks, one index lookup per meter peak."""
    tz = ZoneInfo(device.timezone)
    months = [last.shift(-i) for i in range(count)]
    bounds = [m.bounds(tz) for m in months]
    found = queries.month_rows(device.pk, [start for start, _ in bounds])
    rows = []
    for month, (start, end) in zip(months, bounds, strict=True):
        row = found.get(start)
        rows.append(
            {
                "month": str(month),
                "peak_kw": None if row is None else _round(row.peak_kw),
                "peak_quarter_start": None if row is None else _local(row.peak_bucket, tz),
                "billed_peak_kw": _round(rules.billed_kw(None if row is None else row.peak_kw)),
                "meter_reported_peak": meter_reported_peak(device, start, end, tz),
            }
        )
    return {"device_id": device.device_id, "timezone": device.timezone, "months": rows}


def estimated_cost(price: Decimal | None, average_kw: float) -> dict | None:
    """Capacity cost at the 12-month average, for a year and per month."""
    if price is None:
        return None
    yearly = float(price) * average_kw
    return {
        "price_eur_per_kw_year": float(price),
        "yearly_eur": round(yearly, 2),
        "monthly_eur": round(yearly / 12, 2),
    }


def meter_reported_peak(
    device: Device, start: datetime, end: datetime, tz: ZoneInfo
) -> dict | None:
    """The meter's own monthly peak, as it reported it last within the month."""
    from telemetry.models import HourRollup

    row = (
        # Hours suffice (a quarter of the rows): the meter's monthly peak only rises
        # within a month, so an hour's highest report is also its last.
        HourRollup.objects.filter(
            device_id=device.pk, bucket__gte=start, bucket__lt=end, meter_peak_w__isnull=False
        )
        .order_by("-meter_peak_w")
        .values_list("meter_peak_w", "meter_peak_ts")
        .first()
    )
    if row is None:
        return None
    return {"kw": _round(row[0] / 1000), "ts": _local(row[1], tz)}


def day_quarters(device: Device, day: date) -> dict:
    tz = ZoneInfo(device.timezone)
    start, end = rules.day_bounds(day, tz)
    found = {q.start: q for q in queries.quarter_powers(device.pk, start, end)}
    quarters = []
    for quarter_start in rules.quarter_starts(start, end):
        q = found.get(quarter_start)
        if q is None:
            quarters.append(
                {
                    "start": _local(quarter_start, tz),
                    "kw": None,
                    "coverage": 0.0,
                    "incomplete": True,
                    "sample_count": 0,
                }
            )
        else:
            quarters.append(_quarter_json(q, tz))
    return {
        "device_id": device.device_id,
        "date": day.isoformat(),
        "timezone": device.timezone,
        "quarters": quarters,
    }


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


def realtime(device: Device, now: datetime) -> dict:
    """Latest reading, the running quarter's outlook and the month's peak so far.

    The answer is cached; ``age_s`` is filled in when it is served (see the view).
    """
    tz = ZoneInfo(device.timezone)
    latest = Sample.objects.filter(device=device).order_by("-ts").values(*_LATEST_FIELDS).first()
    if latest is None:
        return {"device_id": device.device_id, "timezone": device.timezone, "latest": None}
    ts = latest["ts"]
    quarter_start = bucket_start(ts, rules.QUARTER)
    month = Month.of(quarter_start, tz)
    month_start, _ = month.bounds(tz)
    # The running quarter is excluded from "the peak so far": it is what we project.
    peak_so_far = rules.MonthPeak(
        month, queries.peak_between(device.pk, month_start, quarter_start)
    )
    # Registers read across register segments: a meter swapped within the running
    # quarter adds no energy (telemetry.segments).
    offsets = Offsets.of_device(device.pk)
    start_register = _register_at(device, quarter_start, offsets)
    latest_register = offsets.import_at(ts, latest["energy_import_kwh"])
    outlook = rules.quarter_outlook(
        energy_so_far_kwh=max(latest_register - start_register, 0.0),
        elapsed_s=(ts - quarter_start).total_seconds(),
        power_now_w=latest["power_w"],
        month_peak_kw=peak_so_far.peak_kw,
    )
    for name in ("ts", "monthly_power_peak_ts"):
        latest[name] = _local(latest[name], tz)
    return {
        "device_id": device.device_id,
        "timezone": device.timezone,
        "latest": latest,
        "quarter": {
            "start": _local(quarter_start, tz),
            "end": _local(quarter_start + rules.QUARTER, tz),
            "average_so_far_kw": _round(outlook.average_so_far_kw),
            "projected_kw": _round(outlook.projected_kw),
            "threshold_kw": _round(outlook.threshold_kw),
            "headroom_w": _round(outlook.headroom_w, 0),
            "exceeds_threshold": outlook.exceeds_threshold,
        },
        "month": {
            "month": str(month),
            "peak_so_far_kw": _round(peak_so_far.peak_kw),
            "billed_peak_so_far_kw": _round(peak_so_far.billed_kw),
        },
    }


def _register_at(device: Device, boundary: datetime, offsets: Offsets) -> float:
    """Continuous import register at a boundary from the two samples around it (two
    index lookups)."""
    samples = Sample.objects.filter(device=device)
    after = samples.filter(ts__gte=boundary).order_by("ts").values_list("ts", "energy_import_kwh")
    before = samples.filter(ts__lt=boundary).order_by("-ts").values_list("ts", "energy_import_kwh")
    first_after = after.first()
    if first_after is None:  # cannot happen: the latest sample is at or after it
        raise ValueError("no sample at or after the quarter start")
    last_before = before.first()

    def continuous(sample: tuple[datetime, float]) -> tuple[datetime, float]:
        return sample[0], offsets.import_at(sample[0], sample[1])

    return rules.interpolate(
        boundary, None if last_before is None else continuous(last_before), continuous(first_after)
    )
