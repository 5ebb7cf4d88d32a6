"""Plausible household history for the demo: months of samples written through ingest.

The load is the simulator's household (edgeclient.household: base load, fridge,
evening cooking and lights, EV sessions, rooftop solar that exports on sunny days),
plus what a year adds: electric heating that grows in winter, and now and then a
heavy appliance for up to an hour (a sauna, a welder, the oven with the dryer), so the
monthly peaks differ from month to month.

Everything follows from the seed and the times passed in: no clock, no global random
state. Samples sit on a fixed grid (every ``step_s`` seconds from the epoch), so a second
run writes the same (device, ts) keys and ingest skips them all.

Registers advance with the net power sampled at each step, so the quarter power the
capacity rules compute equals the meter's own quarter average, which is reported too
(average_power_15m_w, and monthly_power_peak_w with its timestamp).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import p1wire as wire
from capacity.materialize import rebuild
from capacity.rules import Month
from demo.bulkload import insert_history
from edgeclient.household import household_phases, tariff_at
from telemetry.models import Device, Sample

# Three samples a quarter, on its boundaries: coverage (n samples span n-1 steps, widened
# by one step) is 3 x 300 s / 900 s = 100%, and the boundary register values need no
# interpolation. A finer grid only makes the first start slower.
STEP_S = 300
QUARTER_S = 900
# Samples per insert (demo.bulkload): each is one transaction, a few weeks of history.
CHUNK = 10_000
_J_PER_KWH = 3_600_000.0
_EXPORT = (2, 3)  # indexes of the export registers in Registers.values()
_EXPORT_SQUEEZE = 0.9  # share of a too-small export register the history may fill
_FIELDS = list(wire.SAMPLE_FIELDS)


@dataclass(frozen=True)
class Registers:
    """The meter's four registers in kWh (tariff 1 day, tariff 2 night and weekend)."""

    import_t1: float
    import_t2: float
    export_t1: float
    export_t2: float

    def values(self) -> tuple[float, float, float, float]:
        return (self.import_t1, self.import_t2, self.export_t1, self.export_t2)

    @classmethod
    def of_sample(cls, sample: Sample) -> Registers:
        """A stored sample's registers; one without the tariff split counts as tariff 1."""
        return cls(
            sample.energy_import_t1_kwh or sample.energy_import_kwh,
            sample.energy_import_t2_kwh or 0.0,
            # None for a meter without export registers; the demo's simulated meter
            # always has them (left as found: annotation-only, see issue 12 point 8).
            sample.energy_export_t1_kwh or sample.energy_export_kwh,  # type: ignore[arg-type]
            sample.energy_export_t2_kwh or 0.0,
        )


@dataclass(frozen=True)
class _DayExtras:
    heating_w: float
    event_start_h: float | None
    event_hours: float
    event_w: float


@lru_cache(maxsize=64)
def _day_extras(seed: int, ordinal: int) -> _DayExtras:
    rng = random.Random(f"demo:{seed}:{ordinal}")  # noqa: S311 - a reproducible household
    return _DayExtras(
        heating_w=rng.uniform(500, 1500),
        event_start_h=rng.uniform(9.0, 21.0) if rng.random() < 0.08 else None,
        event_hours=rng.uniform(0.3, 1.2),
        event_w=rng.uniform(1500, 6500),
    )


def _extra_w(seed: int, local: datetime) -> float:
    """Heating (winter mornings and evenings) and the occasional heavy appliance."""
    extras = _day_extras(seed, local.toordinal())
    hour = local.hour + local.minute / 60
    watts = 0.0
    if 6 <= local.hour < 9 or 17 <= local.hour < 23:
        winter = 0.5 + 0.5 * math.cos(2 * math.pi * (local.timetuple().tm_yday - 15) / 365)
        watts += extras.heating_w * winter
    start = extras.event_start_h
    if start is not None and start <= hour < start + extras.event_hours:
        watts += extras.event_w
    return watts


def phases_w(
    seed: int, second: int, tz: ZoneInfo, local: datetime | None = None
) -> tuple[float, float, float]:
    """Net power per phase (W, negative when exporting) at a UTC epoch second
    (``local``: the same instant in tz, when the caller has it)."""
    l1, l2, l3 = household_phases(seed, second, tz)
    third = _extra_w(seed, local or datetime.fromtimestamp(second, tz)) / 3
    return (round(l1 + third, 1), round(l2 + third, 1), round(l3 + third, 1))


def history_start(end: datetime, months: int, tz: ZoneInfo) -> datetime:
    """Local midnight on the 1st of the month ``months - 1`` before end's: ``months``
    calendar months, the last of them (end's own) running up to ``end``."""
    if months < 1:
        raise ValueError(f"months: must be at least 1, got {months}")
    return Month.of(end, tz).shift(-(months - 1)).bounds(tz)[0]


def grid(start: datetime, end: datetime, step_s: int) -> range:
    """Epoch seconds of the samples in [start, end]: multiples of step_s."""
    first = -(-math.ceil(start.timestamp()) // step_s) * step_s
    last = math.floor(end.timestamp()) // step_s * step_s
    return range(first, last + 1, step_s)


def default_registers(seed: int) -> Registers:
    """Plausible registers of a meter some years in service."""
    rng = random.Random(f"demo-registers:{seed}")  # noqa: S311 - reproducible
    return Registers(
        rng.uniform(6000, 15000),
        rng.uniform(3000, 9000),
        rng.uniform(500, 3000),
        rng.uniform(200, 1500),
    )


def generate(
    seed: int,
    seconds: range,
    tz: ZoneInfo,
    *,
    before: Registers | None = None,
    at_end: Registers | None = None,
) -> list[list | None]:
    """Sample columns (wire.SAMPLE_FIELDS order, None for fields left out) at ``seconds``.

    ``before``: the registers just before the first sample (continuing a stored
    history); ``at_end``: the registers the last sample must show (joining a live
    meter). Given both, the increments are scaled to fit, so both must be the same
    meter's: bridging two meters would count their difference as energy (the caller,
    demo.bootstrap, leaves ``at_end`` out when the live meter is another one). Given
    only ``at_end``, the history is counted back from it (see _registers for registers
    too small for it).
    """
    step = seconds.step
    if QUARTER_S % step or 3600 % step:
        raise ValueError(f"step_s: must divide {QUARTER_S}, got {step}")
    # Local times of the grid, from one step before the first sample: index i + 1 is
    # sample i. The power at a sample's instant holds until the next one, so register
    # increments are power x step, as a meter sampled this often would show.
    points = range(seconds.start - step, seconds.stop, step)
    local = [datetime.fromtimestamp(second, tz) for second in points]
    power = [phases_w(seed, second, tz, at) for second, at in zip(points, local, strict=True)]
    increments: list[tuple[float, float, float, float]] = []
    for i in range(len(seconds)):
        watts = sum(power[i])
        energy = abs(watts) * step / _J_PER_KWH
        imported, exported = (energy, 0.0) if watts >= 0 else (0.0, energy)
        # Tariffs change on whole hours, so one tariff holds for the whole step.
        if tariff_at(local[i]) == 1:
            increments.append((imported, 0.0, exported, 0.0))
        else:
            increments.append((0.0, imported, 0.0, exported))
    registers = _registers(seed, increments, before, at_end)
    return _columns(seconds, local, power, registers)


def _registers(
    seed: int,
    increments: list[tuple[float, float, float, float]],
    before: Registers | None,
    at_end: Registers | None,
) -> list[list[float]]:
    """Per register, its value at each sample (a column per register)."""
    totals = [sum(column) for column in zip(*increments, strict=True)] if increments else [0.0] * 4
    fallback = (before or default_registers(seed)).values()
    columns = []
    for k in range(4):
        base, scale = fallback[k], 1.0
        if at_end is not None:
            target = at_end.values()[k]
            if before is not None:
                if target >= base and totals[k] > 0:
                    scale = (target - base) / totals[k]
            elif target >= totals[k]:
                base = target - totals[k]
            elif k in _EXPORT:
                # The live meter's export register is younger than a year of solar:
                # the history's export rises slower than its power says, so that the
                # live export does not drop at the seam. (Never for import: scaled
                # import would lower every peak; too small an import register stays
                # unanchored, and the live meter's first quarter then reads 0 kW.)
                scale = _EXPORT_SQUEEZE * target / totals[k]
                base = target - totals[k] * scale
        value, column = base, []
        for inc in increments:
            value += inc[k] * scale
            # Meters count in Wh; rounding a rising series keeps it rising.
            column.append(round(value, 3))
        columns.append(column)
    return columns


def _columns(
    seconds: range,
    local: list[datetime],
    power: list[tuple[float, float, float]],
    registers: list[list[float]],
) -> list[list | None]:
    """The sample columns, with the meter's own quarter average and monthly peak."""
    imp_t1, imp_t2, exp_t1, exp_t2 = registers
    cols: dict[str, list] = {name: [] for name in _FIELDS}
    per_quarter = QUARTER_S // seconds.step
    quarter_import: float | None = None  # import register at the running quarter's start
    last_average = 0.0
    peak: tuple[float, datetime] | None = None
    peak_month: tuple[int, int] | None = None
    for i, second in enumerate(seconds):
        ts = datetime.fromtimestamp(second, UTC)
        at = local[i + 1]
        imported = imp_t1[i] + imp_t2[i]
        if second % QUARTER_S == 0:
            if quarter_import is not None:
                # Like a real meter: the quarter's average, stamped when it closes, in
                # the month the quarter started in.
                last_average = (imported - quarter_import) * _J_PER_KWH / QUARTER_S
                began = local[i + 1 - per_quarter]
                if (began.year, began.month) != peak_month:
                    peak, peak_month = None, (began.year, began.month)
                if peak is None or last_average > peak[0]:
                    peak = (last_average, ts)
            quarter_import = imported
            average = last_average
        elif quarter_import is None:
            average = 0.0
        else:
            average = (imported - quarter_import) * _J_PER_KWH / (second % QUARTER_S)
        if (at.year, at.month) != peak_month:
            peak, peak_month = None, (at.year, at.month)
        l1, l2, l3 = power[i + 1]
        for name, value in (
            ("ts", ts),
            ("power_w", round(l1 + l2 + l3, 1)),
            ("energy_import_kwh", round(imported, 3)),
            ("energy_export_kwh", round(exp_t1[i] + exp_t2[i], 3)),
            ("energy_import_t1_kwh", imp_t1[i]),
            ("energy_import_t2_kwh", imp_t2[i]),
            ("energy_export_t1_kwh", exp_t1[i]),
            ("energy_export_t2_kwh", exp_t2[i]),
            ("power_l1_w", l1),
            ("power_l2_w", l2),
            ("power_l3_w", l3),
            ("tariff", tariff_at(at)),
            ("average_power_15m_w", round(max(average, 0.0), 1)),
            ("monthly_power_peak_w", None if peak is None else round(peak[0], 1)),
            ("monthly_power_peak_ts", None if peak is None else peak[1]),
        ):
            cols[name].append(value)
    return [cols[name] if cols[name] else None for name in _FIELDS]


def _chunks(columns: list[list | None], size: int) -> Iterator[list[list | None]]:
    count = len(columns[0]) if columns[0] else 0
    for lo in range(0, count, size):
        yield [None if column is None else column[lo : lo + size] for column in columns]


def backfill(
    device: Device,
    *,
    end: datetime,
    months: int = 13,
    seed: int = 0,
    step_s: int = STEP_S,
    start: datetime | None = None,
    before: Registers | None = None,
    at_end: Registers | None = None,
    chunk: int = CHUNK,
) -> int:
    """Write the device's history from ``start`` (default: the 1st of the month
    ``months - 1`` before end's, local time) through ``end``; returns the samples that
    were new. Capacity quarters and months are rebuilt afterwards."""
    tz = ZoneInfo(device.timezone)
    if start is None:
        start = history_start(end, months, tz)
    seconds = grid(start, end, step_s)
    if not seconds:
        return 0
    columns = generate(seed, seconds, tz, before=before, at_end=at_end)
    inserted = 0
    for part in _chunks(columns, chunk):
        inserted += insert_history(device.pk, part)
    if inserted:
        rebuild(device.pk)
    return inserted
