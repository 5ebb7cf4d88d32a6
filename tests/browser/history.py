"""A household's history for the dashboard tests and screenshots, written straight into
the database with telemetry.ingest.insert_columns (the ingest path, minus HTTP).

Power follows edgeclient.household (the simulator's household, so history and a live
simulate_p1 look alike); registers integrate it. ``end_import_kwh`` pins the import
register at ``end``, so a simulator started afterwards continues the same register
instead of leaving a jump that would look like an enormous quarter.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from edgeclient import wire
from edgeclient.household import household_phases
from telemetry.ingest import insert_columns
from telemetry.models import Device

_J_PER_KWH = 3_600_000.0
BATCH = 5000


def history_samples(
    *,
    end: datetime,
    days: int,
    step_s: int,
    recent_days: int = 2,
    recent_step_s: int = 60,
    seed: int = 1,
    end_import_kwh: float = 10_000.0,
    end_export_kwh: float = 2_000.0,
    keep: Callable[[datetime], bool] | None = None,
) -> list[tuple[datetime, float, float, float, tuple[float, float, float], float, datetime]]:
    """(ts, power, import, export, phases, meter peak W, meter peak ts) from end-days to end.

    The last ``recent_days`` are sampled every ``recent_step_s`` (complete quarters for
    the day view), older ones every ``step_s``. ``keep`` selects which samples are
    returned (registers still count the energy of the ones left out): a sparse history
    inserts quickly where rollups are kept row by row (SQLite).
    """
    end_s = int(end.timestamp())
    seconds = []
    s = end_s - days * 86400
    s -= s % step_s
    recent_from = end_s - recent_days * 86400
    while s <= end_s:
        seconds.append(s)
        s += recent_step_s if s >= recent_from else step_s
    powers = [household_phases(seed, second) for second in seconds]
    imported, exported = [0.0], [0.0]
    for i in range(1, len(seconds)):
        dt = seconds[i] - seconds[i - 1]
        net = sum(powers[i - 1])
        imported.append(imported[-1] + max(net, 0.0) * dt / _J_PER_KWH)
        exported.append(exported[-1] + max(-net, 0.0) * dt / _J_PER_KWH)
    import_base = end_import_kwh - imported[-1]
    export_base = end_export_kwh - exported[-1]
    out = []
    # The meter's own monthly peak: its highest closed quarter of the month so far.
    peak_w, peak_ts, month, quarter, quarter_import = 0.0, None, None, None, 0.0
    for i, second in enumerate(seconds):
        ts = datetime.fromtimestamp(second, UTC)
        q = second - second % 900
        if q != quarter:
            if quarter is not None:
                average = (imported[i] - quarter_import) * _J_PER_KWH / 900
                if (ts.year, ts.month) != month:
                    peak_w, peak_ts, month = 0.0, None, (ts.year, ts.month)
                if average > peak_w:
                    peak_w, peak_ts = average, datetime.fromtimestamp(q, UTC)
            quarter, quarter_import = q, imported[i]
        if keep is not None and not keep(ts):
            continue
        out.append(
            (
                ts,
                round(sum(powers[i]), 1),
                round(import_base + imported[i], 4),
                round(export_base + exported[i], 4),
                powers[i],
                round(peak_w, 1),
                peak_ts,
            )
        )
    return out


def backfill(device: Device, **kwargs) -> int:
    """Insert ``history_samples(**kwargs)`` for ``device``; returns how many were new."""
    rows = history_samples(**kwargs)
    fields = list(wire.SAMPLE_FIELDS)
    inserted = 0
    for i in range(0, len(rows), BATCH):
        chunk = rows[i : i + BATCH]
        values = {
            "ts": [r[0] for r in chunk],
            "power_w": [r[1] for r in chunk],
            "energy_import_kwh": [r[2] for r in chunk],
            "energy_export_kwh": [r[3] for r in chunk],
            "power_l1_w": [r[4][0] for r in chunk],
            "power_l2_w": [r[4][1] for r in chunk],
            "power_l3_w": [r[4][2] for r in chunk],
            "monthly_power_peak_w": [r[5] if r[6] else None for r in chunk],
            "monthly_power_peak_ts": [r[6] for r in chunk],
        }
        columns = [values.get(name) for name in fields]
        inserted += insert_columns(device.pk, columns, device.timezone)
    return inserted


def sparse(end: datetime, dense_days: int, days_of_month: tuple[int, ...] = (15,)):
    """``keep`` for history_samples: every sample of the last ``dense_days``, and older
    ones only on the given days of each month (enough for a peak per month)."""
    dense_from = end.timestamp() - dense_days * 86400

    def keep(ts: datetime) -> bool:
        return ts.timestamp() >= dense_from or ts.day in days_of_month

    return keep
