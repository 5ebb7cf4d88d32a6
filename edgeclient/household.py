"""A deterministic Belgian household behind a digital meter, for the simulator.

Everything follows from a seed and the clock the caller passes in: the same seed and
the same seconds give the same telegrams, so a test can predict what the meter says.
Registers advance by integrating the net power second by second, so the figures are
consistent the way a real meter's are (import only grows while power is positive).
No Django, no I/O.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

BRUSSELS = ZoneInfo("Europe/Brussels")
QUARTER_S = 900
GAS_PERIOD_S = 300  # a Belgian gas meter reports every five minutes
WATER_M3_PER_DAY = 0.15
_J_PER_KWH = 3_600_000.0
_COARSE_STEP_S = 10  # integration step when catching up over long gaps
_PREROLL_STEP_S = 300  # month-so-far pre-roll: three steps per quarter is enough
_MASK64 = (1 << 64) - 1
HISTORY_MONTHS = 13  # what a Fluvius meter keeps of 0-0:98.1.0


@dataclass(frozen=True)
class Telegram:
    """What the meter reports at one second (registers in kWh, power in W)."""

    second: int  # UTC epoch second of the telegram
    power_w: float
    phase_power_w: tuple[float, float, float]
    phase_voltage_v: tuple[float, float, float]
    phase_current_a: tuple[float, float, float]
    tariff: int
    import_kwh: tuple[float, float]  # (t1 day, t2 night/weekend)
    export_kwh: tuple[float, float]
    average_power_15m_w: float
    monthly_power_peak_w: float | None
    monthly_power_peak_second: int | None
    gas_m3: float
    gas_second: int
    water_m3: float = 0.0
    meter: int = 0  # 0 for the first meter, +1 at each swap (see MeterModel.swap_meter)
    # The meter's closed months (0-0:98.1.0), oldest first: ((year, month), peak W, the
    # UTC second its quarter ended). A Fluvius meter keeps 13.
    monthly_peak_history: tuple[tuple[tuple[int, int], float, int], ...] = ()

    @property
    def moment(self) -> datetime:
        return datetime.fromtimestamp(self.second, UTC)


@dataclass(frozen=True)
class _DayPlan:
    fridge_offset_s: int
    cooking_start_h: float
    cooking_hours: float
    cooking_w: float
    lunch: bool
    ev_start_h: float | None
    ev_hours: float
    ev_w: float
    sunshine: float  # 0.25 (overcast) .. 1 (clear)


@lru_cache(maxsize=64)
def _day_plan(seed: int, ordinal: int) -> _DayPlan:
    rng = random.Random(f"{seed}:{ordinal}")  # noqa: S311 - a reproducible household
    weekend = datetime.fromordinal(ordinal).weekday() >= 5
    return _DayPlan(
        fridge_offset_s=rng.randrange(3000),
        cooking_start_h=18.0 + rng.uniform(-0.5, 0.75),
        cooking_hours=rng.uniform(0.5, 1.0),
        cooking_w=rng.uniform(2500, 4000),
        lunch=weekend and rng.random() < 0.7,
        ev_start_h=rng.uniform(18.5, 23.0) if rng.random() < 0.4 else None,
        ev_hours=rng.uniform(1.5, 4.0),
        ev_w=7400.0,
        sunshine=rng.uniform(0.25, 1.0),
    )


def _noise(seed: int, second: int) -> float:
    """A cheap deterministic value in [-1, 1) per (seed, second): splitmix64 finaliser."""
    x = (second * 0x9E3779B97F4A7C15 + seed * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 31
    x = (x * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 29
    return x / float(1 << 63) - 1.0


def _window(hour: float, start: float, hours: float) -> bool:
    return start <= hour < start + hours or start <= hour + 24 < start + hours


def tariff_at(local: datetime) -> int:
    """Belgian dual tariff: 1 (day) on weekdays 07:00-22:00, else 2 (night, weekend)."""
    return 1 if local.weekday() < 5 and 7 <= local.hour < 22 else 2


def household_phases(
    seed: int, second: int, tz: ZoneInfo = BRUSSELS, kwp: float = 5.0
) -> tuple[float, float, float]:
    """Net power per phase (W, negative when exporting) at a UTC epoch second."""
    local = datetime.fromtimestamp(second, tz)
    hour = local.hour + local.minute / 60 + local.second / 3600
    plan = _day_plan(seed, local.toordinal())
    # Evening EV sessions run past midnight: yesterday's plan may still be charging.
    before = _day_plan(seed, local.toordinal() - 1)

    l1 = 220.0 + 25.0 * _noise(seed, second)
    if (second + plan.fridge_offset_s) % 3000 < 1200:
        l1 += 90.0
    if 17 <= hour < 23:
        l1 += 300.0  # lights, television
    l2 = 15.0
    if 7.0 <= hour < 7.05 or 7.5 <= hour < 7.55:
        l2 += 1800.0  # kettle, coffee machine
    l3 = 10.0
    cooking = _window(hour, plan.cooking_start_h, plan.cooking_hours) or (
        plan.lunch and _window(hour, 12.0, 0.5)
    )
    if cooking:
        half = plan.cooking_w / 2
        l2 += half
        l3 += half
    charging = (plan.ev_start_h is not None and _window(hour, plan.ev_start_h, plan.ev_hours)) or (
        before.ev_start_h is not None and hour + 24 < before.ev_start_h + before.ev_hours
    )
    if charging:
        l1 += plan.ev_w / 3
        l2 += plan.ev_w / 3
        l3 += plan.ev_w / 3

    solar = _solar_w(seed, second, local, hour, plan, kwp) / 3
    return (round(l1 - solar, 1), round(l2 - solar, 1), round(l3 - solar, 1))


def _solar_w(
    seed: int, second: int, local: datetime, hour: float, plan: _DayPlan, kwp: float
) -> float:
    day_of_year = local.timetuple().tm_yday
    season = math.sin(2 * math.pi * (day_of_year - 80) / 365)
    day_hours = 12.2 + 4.2 * season
    dst = local.dst() or timedelta(0)
    solar_noon = 12.6 + dst.total_seconds() / 3600
    x = (hour - solar_noon) / (day_hours / 2)
    if abs(x) >= 1:
        return 0.0
    elevation = 0.62 + 0.38 * season
    clouds = 1.0 - (1.0 - plan.sunshine) * (0.6 + 0.4 * _noise(seed + 1, second // 60))
    return kwp * 1000 * 0.8 * elevation * math.cos(x * math.pi / 2) ** 2 * clouds


def _gas_rate_m3_per_s(local: datetime) -> float:
    winter = 0.5 + 0.5 * math.cos(2 * math.pi * (local.timetuple().tm_yday - 15) / 365)
    heating = 0.9 if 6 <= local.hour < 9 or 17 <= local.hour < 23 else 0.15
    return (0.02 + heating * winter) / 3600


@dataclass
class MeterModel:
    """The meter's state; ``telegram(second)`` moves it forward, never back."""

    seed: int
    start_second: int
    tz: ZoneInfo = BRUSSELS
    kwp: float = 5.0
    _second: int = field(init=False)
    _import: list[float] = field(init=False)
    _export: list[float] = field(init=False)
    _gas: float = field(init=False)
    _gas_reported: tuple[float, int] = field(init=False)
    _quarter_start: int = field(init=False)
    _import_at_quarter: float = field(init=False)
    _peak: tuple[float, int] | None = field(init=False, default=None)
    _peak_month: tuple[int, int] = field(init=False)
    _water_base: float = field(init=False)
    _meter: int = field(init=False, default=0)
    _history: list[tuple[tuple[int, int], float, int]] = field(init=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)  # noqa: S311 - reproducible, not secret
        self._import = [rng.uniform(6000, 15000), rng.uniform(3000, 9000)]
        self._export = [rng.uniform(500, 3000), rng.uniform(200, 1500)]
        self._gas = rng.uniform(1500, 6000)
        self._water_base = rng.uniform(100, 900)
        month_start = self._month_start(self.start_second)
        self._second = month_start
        self._gas_reported = (self._gas, month_start - month_start % GAS_PERIOD_S)
        self._quarter_start = month_start - month_start % QUARTER_S
        self._import_at_quarter = sum(self._import)
        self._peak_month = self._month_of(month_start)
        self._history = self._earlier_months(month_start)
        # Run the month so far coarsely, so the meter starts with a plausible peak.
        self._advance(self.start_second, step=_PREROLL_STEP_S)

    def telegram(self, second: int) -> Telegram:
        """The telegram at ``second`` (or the latest one, if the clock went back)."""
        if second > self._second:
            step = 1 if second - self._second <= 3600 else _COARSE_STEP_S
            self._advance(second, step=step)
        now = self._second
        phases = household_phases(self.seed, now, self.tz, self.kwp)
        volts = tuple(
            round(230.0 + 2.5 * math.sin(now / 600 + i) - p * 0.0004, 1)
            for i, p in enumerate(phases)
        )
        amps = tuple(round(p / v, 3) for p, v in zip(phases, volts, strict=True))
        elapsed = max(now - self._quarter_start, 1)
        average = (sum(self._import) - self._import_at_quarter) * _J_PER_KWH / elapsed
        return Telegram(
            second=now,
            power_w=round(sum(phases), 1),
            phase_power_w=phases,
            phase_voltage_v=volts,  # type: ignore[arg-type]
            phase_current_a=amps,  # type: ignore[arg-type]
            tariff=tariff_at(datetime.fromtimestamp(now, self.tz)),
            import_kwh=(round(self._import[0], 3), round(self._import[1], 3)),
            export_kwh=(round(self._export[0], 3), round(self._export[1], 3)),
            average_power_15m_w=round(average, 1),
            monthly_power_peak_w=None if self._peak is None else round(self._peak[0], 1),
            monthly_power_peak_second=None if self._peak is None else self._peak[1],
            gas_m3=round(self._gas_reported[0], 3),
            gas_second=self._gas_reported[1],
            # A water meter reports with the gas period; a steady flow is enough here.
            water_m3=round(self._water_base + self._gas_reported[1] * WATER_M3_PER_DAY / 86400, 3),
            meter=self._meter,
            monthly_peak_history=tuple(self._history),
        )

    @property
    def meter(self) -> int:
        """How many times the meter was swapped (0: the first meter)."""
        return self._meter

    def swap_meter(self) -> None:
        """The grid operator replaces the meter: new registers from (near) zero, no peak.

        The household, its load and its gas meter stay; the next telegram is the new
        meter's.
        """
        self._meter += 1
        self._import = [0.0, 0.0]
        self._export = [0.0, 0.0]
        self._import_at_quarter = 0.0
        self._peak = None
        self._history = []  # the history is the meter's: a new one starts without

    def _advance(self, until: int, *, step: int) -> None:
        second = self._second
        while second < until:
            nxt = min(second + step, until)
            # Close a quarter or gas period crossed inside this step at its boundary.
            boundary = second - second % QUARTER_S + QUARTER_S
            gas_boundary = second - second % GAS_PERIOD_S + GAS_PERIOD_S
            nxt = min(nxt, boundary, gas_boundary)
            self._integrate(nxt, nxt - second)
            if nxt == boundary:
                self._close_quarter(boundary)
            if nxt == gas_boundary:
                self._gas_reported = (self._gas, gas_boundary)
            second = nxt
        self._second = second

    def _integrate(self, second: int, dt: int) -> None:
        local = datetime.fromtimestamp(second, self.tz)
        power = sum(household_phases(self.seed, second, self.tz, self.kwp))
        index = tariff_at(local) - 1
        if power >= 0:
            self._import[index] += power * dt / _J_PER_KWH
        else:
            self._export[index] -= power * dt / _J_PER_KWH
        self._gas += _gas_rate_m3_per_s(local) * dt

    def _close_quarter(self, boundary: int) -> None:
        total = sum(self._import)
        average_w = (total - self._import_at_quarter) * _J_PER_KWH / QUARTER_S
        month = self._month_of(self._quarter_start)
        if month != self._peak_month:
            self._close_month(month)
        if self._peak is None or average_w > self._peak[0]:
            # Like a real meter, the peak is stamped when its quarter closes.
            self._peak = (average_w, boundary)
        self._quarter_start, self._import_at_quarter = boundary, total
        if self._month_of(boundary) != self._peak_month:
            self._close_month(self._month_of(boundary))

    def _close_month(self, new_month: tuple[int, int]) -> None:
        """The month's maximum joins the history (at most 13 months) and a new one starts."""
        if self._peak is not None:
            self._history = [*self._history, (self._peak_month, *self._peak)][-HISTORY_MONTHS:]
        self._peak, self._peak_month = None, new_month

    def _earlier_months(self, month_start: int) -> list[tuple[tuple[int, int], float, int]]:
        """13 plausible earlier maxima, each on a winter or summer evening quarter.

        Their own generator: the registers and the load keep the draws they had.
        """
        rng = random.Random(self.seed ^ 0x5EED)  # noqa: S311 - reproducible, not secret
        local = datetime.fromtimestamp(month_start, self.tz)
        months: list[tuple[tuple[int, int], float, int]] = []
        for back in range(HISTORY_MONTHS, 0, -1):
            index = local.year * 12 + local.month - 1 - back
            year, month = index // 12, index % 12 + 1
            day = rng.randint(1, 28)
            quarter_end = datetime(year, month, day, 18, 15 * rng.randint(1, 3), tzinfo=self.tz)
            months.append(
                ((year, month), round(rng.uniform(2200.0, 7800.0), 1), int(quarter_end.timestamp()))
            )
        return months

    def _month_of(self, second: int) -> tuple[int, int]:
        local = datetime.fromtimestamp(second, self.tz)
        return local.year, local.month

    def _month_start(self, second: int) -> int:
        local = datetime.fromtimestamp(second, self.tz)
        first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return int(first.timestamp())
