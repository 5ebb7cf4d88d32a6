from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.samples import sample

# The server clock for most tests: 14:40 UTC, so the current quarter is 14:30-14:45
# (15:30-15:45 in Brussels) and 14:00 and 14:15 are earlier quarters of the same month.
NOW = datetime(2026, 3, 10, 14, 40, tzinfo=UTC)
QUARTER_START = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)


class Meter:
    """Samples with an import register that advances with the power drawn."""

    def __init__(self, register_kwh: float = 5000.0) -> None:
        self.register_kwh = register_kwh

    def run(self, start: datetime, end: datetime, power_w: float, step_s: int = 10) -> list[dict]:
        """Samples every ``step_s`` from ``start`` up to and including ``end``."""
        samples = []
        ts = start
        while ts <= end:
            samples.append(sample(ts, power_w=power_w, energy_import_kwh=self.register_kwh))
            self.register_kwh += power_w / 1000 * step_s / 3600
            ts += timedelta(seconds=step_s)
        return samples


@pytest.fixture
def meter() -> Meter:
    return Meter()


@pytest.fixture
def clock(monkeypatch):
    """Pins the server clock that decides which quarter is current; returns a setter."""
    from peakguard import evaluate

    now = {"value": NOW}
    monkeypatch.setattr(evaluate, "clock", lambda: now["value"])

    def set_now(value: datetime) -> None:
        now["value"] = value

    return set_now


@pytest.fixture
def webhooks(settings, transactional_db) -> Iterator[None]:
    """Local receivers allowed, retries fast; the delivery thread stopped afterwards
    (before the test database goes away)."""
    from peakguard.delivery import worker

    settings.PEAKGUARD_ALLOW_PRIVATE_TARGETS = True
    settings.PEAKGUARD_RETRY_DELAYS_S = ["0", "0.2", "0.2"]
    yield
    worker.stop()


def make_guard(device, url: str, threshold_kw: float | None = None):
    from peakguard.models import PeakGuard

    return PeakGuard.objects.create(device=device, webhook_url=url, threshold_kw=threshold_kw)
