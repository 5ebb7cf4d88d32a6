"""Shared by the integration tests: a household's history, loaded through the ingest
rules (telemetry.pipeline.accept_batch), so every derived relation is what a real
ingest leaves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from p1common.samples import sample

# 14 months, each with a two-hour block of one-minute readings on the 10th at 18:00 UTC,
# at a power that differs per month (so every month has its own peak), and the day of
# the 2026 spring clock change (92 quarters) with readings from 00:00 to 03:00 UTC.
HISTORY_MONTHS = [(2025 + (1 + i) // 12, (1 + i) % 12 + 1) for i in range(14)]
CLOCK_CHANGE_DAY = "2026-03-29"


def history(first_register_kwh: float = 5000.0) -> list[dict[str, Any]]:
    """Readings whose registers rise with the power they report."""
    readings: list[dict[str, Any]] = []
    register, exported = first_register_kwh, 2000.0
    blocks = [
        (datetime(year, month, 10, 18, tzinfo=UTC), 120, 900.0 + 250.0 * i)
        for i, (year, month) in enumerate(HISTORY_MONTHS)
    ]
    blocks.append((datetime(2026, 3, 29, 0, tzinfo=UTC), 180, 700.0))
    blocks.sort()
    for start, minutes, power in blocks:
        for minute in range(minutes):
            ts = start + timedelta(minutes=minute)
            # A ripple, so quarters within a block differ too.
            watts = power + 150.0 * ((minute // 15) % 3)
            register += watts / 60_000
            exported += 0.001
            readings.append(
                sample(
                    ts,
                    power_w=watts,
                    energy_import_kwh=round(register, 6),
                    energy_export_kwh=round(exported, 6),
                    energy_import_t1_kwh=None,
                    energy_import_t2_kwh=None,
                    monthly_power_peak_w=2000.0 + power,
                    monthly_power_peak_ts=start.isoformat(),
                )
            )
    return readings


def load(device, readings: list[dict[str, Any]]) -> None:
    from telemetry.pipeline import accept_batch

    now = datetime(2026, 12, 1, tzinfo=UTC)
    for i in range(0, len(readings), 1000):
        accept_batch(device, {"samples": readings[i : i + 1000]}, now)


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staff", password="staff-pw-123", is_staff=True)
