"""Sample payloads as the edge sends them (p1wire field names)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

BASE_TS = datetime(2026, 3, 1, tzinfo=UTC)
REGISTER_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def sample(ts: datetime, **overrides: Any) -> dict[str, Any]:
    """A sample with every optional field filled, as a 3-phase Belgian meter reports."""
    # Registers grow by 1 kWh an hour from 2020 on, so any later ts gives a valid reading.
    seconds = (ts - REGISTER_EPOCH).total_seconds()
    body = {
        "ts": ts.isoformat(),
        "power_w": 1250.5,
        "energy_import_kwh": 10000.0 + seconds / 3600,
        "energy_export_kwh": 2000.0,
        "energy_import_t1_kwh": 6000.0 + seconds / 7200,
        "energy_import_t2_kwh": 4000.0 + seconds / 7200,
        "energy_export_t1_kwh": 1500.0,
        "energy_export_t2_kwh": 500.0,
        "power_l1_w": 400.0,
        "power_l2_w": 450.5,
        "power_l3_w": 400.0,
        "voltage_l1_v": 231.2,
        "voltage_l2_v": 229.8,
        "voltage_l3_v": 230.4,
        "current_l1_a": 1.8,
        "current_l2_a": 2.0,
        "current_l3_a": 1.8,
        "tariff": 1,
        "average_power_15m_w": 1180.0,
        "monthly_power_peak_w": 4321.0,
        "monthly_power_peak_ts": "2026-02-14T18:15:00+00:00",
        "gas_m3": 3210.123,
        "gas_ts": "2026-03-01T00:00:00+00:00",
    }
    body.update(overrides)
    return body


def series(count: int, start: datetime = BASE_TS, step_s: float = 1.0) -> list[dict[str, Any]]:
    return [sample(start + timedelta(seconds=i * step_s)) for i in range(count)]


def meter_swap(count: int = 6) -> list[dict[str, Any]]:
    """``count`` readings 10 s apart at about 10,000 kWh, then, five minutes after the
    first, a new meter that starts at 0.5 kWh and has no export registers."""
    old = [sample(BASE_TS + timedelta(seconds=10 * i)) for i in range(count)]
    new = [
        sample(
            BASE_TS + timedelta(minutes=5, seconds=10 * i),
            energy_import_kwh=0.5 + i / 3600,
            energy_export_kwh=None,
        )
        for i in range(count)
    ]
    return old + new
