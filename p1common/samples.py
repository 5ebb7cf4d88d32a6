"""A synthetic sample as the edge sends it (p1wire field names), for the tests and the
benchmarks alike: every optional field filled, registers that grow with its ts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
