"""The rollup rows every plan stores alike: their columns, and one bucket's values
folded from raw samples (SQLite's refresh and the demo's bulk load compute them so;
the PostgreSQL merge and the continuous aggregates compute the same in SQL)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from telemetry.timegrid import HOUR, QUARTER

RELATIONS = {"telemetry_quarter": QUARTER, "telemetry_hour": HOUR}
ROLLUP_COLUMNS = (
    "device_id",
    "bucket",
    "first_ts",
    "last_ts",
    "first_import_kwh",
    "last_import_kwh",
    "first_export_kwh",
    "last_export_kwh",
    "sample_count",
    "power_sum_w",
    "min_power_w",
    "max_power_w",
    "meter_avg_15m_w",
    "meter_peak_w",
    "meter_peak_ts",
)
# The columns a series bucket is built from (telemetry.series).
SERIES_COLUMNS = ROLLUP_COLUMNS[1:12]
SAMPLE_INPUT_COLUMNS = (
    "ts",
    "power_w",
    "energy_import_kwh",
    "energy_export_kwh",
    "average_power_15m_w",
    "monthly_power_peak_w",
    "monthly_power_peak_ts",
)


def aggregate_bucket(device_pk: int, bucket: datetime, rows: Sequence[Sequence[Any]]) -> list:
    """One rollup row from samples in time order (the columns of SAMPLE_INPUT_COLUMNS)."""
    first, last = rows[0], rows[-1]
    powers = [r[1] for r in rows]
    peaks = [r[5] for r in rows if r[5] is not None]
    return [
        device_pk,
        bucket,
        first[0],
        last[0],
        first[2],
        last[2],
        first[3],
        last[3],
        len(rows),
        sum(powers),
        min(powers),
        max(powers),
        last[4],
        max(peaks) if peaks else None,
        last[6],
    ]


# A run of touched buckets is read with one query; runs longer than this are split so
# a sparse batch over weeks does not read weeks of samples in one statement.
MAX_RUN_BUCKETS = 96


def bucket_runs(starts: Iterable[datetime], width: timedelta) -> list[tuple[datetime, datetime]]:
    """Consecutive bucket starts joined into [start, end) ranges of at most MAX_RUN_BUCKETS."""
    runs: list[tuple[datetime, datetime]] = []
    for start in sorted(set(starts)):
        if runs:
            run_start, run_end = runs[-1]
            if run_end == start and (run_end - run_start) < width * MAX_RUN_BUCKETS:
                runs[-1] = (run_start, start + width)
                continue
        runs.append((start, start + width))
    return runs
