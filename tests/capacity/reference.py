"""A small, obviously-correct reference of the capacity rules, straight from raw samples.

Deliberately naive: no rollups, no SQL, a linear scan per boundary. The SQL path must
agree with it on any data.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta

from capacity import rules

QUARTER = timedelta(minutes=15)


def register_at(boundary: datetime, samples: list[tuple[datetime, float]]) -> float | None:
    """Import register at a boundary from (ts, register) pairs sorted by ts."""
    times = [ts for ts, _ in samples]
    i = bisect.bisect_left(times, boundary)
    if i == len(samples):
        return samples[-1][1] if samples else None
    after = samples[i]
    before = samples[i - 1] if i > 0 else None
    return rules.interpolate(boundary, before, after)


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
        end_value = rules.interpolate(start + QUARTER, inside[-1], samples[i_end])
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
