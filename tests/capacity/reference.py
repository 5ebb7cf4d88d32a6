"""A small, obviously-correct reference of the capacity rules, straight from raw samples.

Deliberately naive: no rollups, no SQL, a linear scan per boundary. The SQL path must
agree with it on any data.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta

from capacity import rules
from telemetry.timegrid import interpolate

QUARTER = timedelta(minutes=15)


def register_at(boundary: datetime, samples: list[tuple[datetime, float]]) -> float | None:
    """Import register at a boundary from (ts, register) pairs sorted by ts."""
    times = [ts for ts, _ in samples]
    i = bisect.bisect_left(times, boundary)
    if i == len(samples):
        return samples[-1][1] if samples else None
    after = samples[i]
    before = samples[i - 1] if i > 0 else None
    return interpolate(boundary, before, after)


def quarter_kw(samples: list[tuple[datetime, float]], start: datetime) -> dict | None:
    """kW, coverage and count of the quarter starting at ``start``, None when empty."""
    inside = [(ts, v) for ts, v in samples if start <= ts < start + QUARTER]
    if not inside:
        return None
    times = [ts for ts, _ in samples]
    i_end = bisect.bisect_left(times, start + QUARTER)
    if i_end == len(samples):
        end_value = inside[-1][1]  # nothing after the quarter yet: no extrapolation
    else:
        end_value = interpolate(start + QUARTER, inside[-1], samples[i_end])
    start_value = register_at(start, samples)
    return {
        "kw": max((end_value - start_value) * 4, 0.0),
        "coverage": rules.coverage(inside[0][0], inside[-1][0], len(inside)),
        "sample_count": len(inside),
    }


def month_peak(samples, start: datetime, end: datetime) -> float | None:
    peaks = [
        q["kw"]
        for s in rules.quarter_starts(start, end)
        if (q := quarter_kw(samples, s)) is not None
    ]
    return max(peaks) if peaks else None


# --- register segments ----------------------------------------------------------------
# The rule, restated: a register that goes down by more than one register unit, or
# rises faster than any household connection allows, starts a new segment. Energy is
# the register's rise inside segments only; no value is interpolated across a step.

REGISTER_UNIT_KWH = 0.001
MAX_HOUSEHOLD_KW = 250.0


def is_break(before: tuple, after: tuple) -> bool:
    """(ts, import[, export]) readings in time order: is there a step between them?"""
    hours = (after[0] - before[0]).total_seconds() / 3600
    for old, new in zip(before[1:], after[1:], strict=False):
        if old is None or new is None:
            continue
        if (
            new < old - REGISTER_UNIT_KWH
            or new - old > REGISTER_UNIT_KWH + MAX_HOUSEHOLD_KW * hours
        ):
            return True
    return False


def split_segments(samples: list[tuple]) -> list[list[tuple]]:
    """Readings sorted by ts, cut where the rule sees a step."""
    segments: list[list[tuple]] = []
    for reading in samples:
        if segments and not is_break(segments[-1][-1], reading):
            segments[-1].append(reading)
        else:
            segments.append([reading])
    return segments


def _value_in_segment(segment: list[tuple], moment: datetime) -> float:
    """The segment's import register at a moment, clamped to its own first and last
    reading outside it (nothing is invented beyond the segment)."""
    if moment <= segment[0][0]:
        return segment[0][1]
    if moment >= segment[-1][0]:
        return segment[-1][1]
    times = [r[0] for r in segment]
    i = bisect.bisect_left(times, moment)
    if times[i] == moment:
        return segment[i][1]
    return interpolate(moment, segment[i - 1][:2], segment[i][:2])


def segmented_quarter_kw(samples: list[tuple], start: datetime) -> dict | None:
    """quarter_kw over register segments: the energy of each segment's part of the
    quarter, and coverage from the measured parts only."""
    end = start + QUARTER
    inside = [r for r in samples if start <= r[0] < end]
    if not inside:
        return None
    energy = 0.0
    measured_s = 0.0
    for segment in split_segments(samples):
        energy += _value_in_segment(segment, end) - _value_in_segment(segment, start)
        part = [r for r in segment if start <= r[0] < end]
        if part:
            measured_s += (part[-1][0] - part[0][0]).total_seconds()
    n = len(inside)
    coverage = 0.0 if n < 2 else min(1.0, measured_s * n / (n - 1) / rules.QUARTER_S)
    return {"kw": max(energy * 4, 0.0), "coverage": coverage, "sample_count": n}


def segmented_energy(samples: list[tuple], start: datetime, end: datetime, which: int = 1):
    """Register rise in [start, end) inside segments; ``which`` 1: import, 2: export."""
    total = 0.0
    for segment in split_segments(samples):
        pairs = [(r[0], r[which]) for r in segment]
        if any(v is None for _, v in pairs):
            return None
        total += _value_in_segment(pairs, end) - _value_in_segment(pairs, start)
    return total
