"""Edge fixtures: a simulated meter in this process, on an ephemeral port, with a clock
the test moves by hand (so polls get distinct telegram seconds without sleeping)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edgeclient.simulator import Faults, P1Simulator, SimulatorConfig

FIXTURES = Path(__file__).resolve().parents[2] / "edgeclient" / "fixtures"
# A Friday afternoon in June, Belgian summer time (UTC+2).
DEFAULT_START = datetime(2024, 6, 28, 12, 0, 0, tzinfo=UTC)


class ManualClock:
    """UTC epoch seconds that only move when the test says so."""

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def set(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    @property
    def moment(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def load_fixture(name: str, model: str = "HWE-P1") -> dict[str, Any]:
    return json.loads((FIXTURES / model / name).read_text())


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def cert_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Certificates are kept per seed for the session: openssl runs once per device.
    return tmp_path_factory.mktemp("sim-certs")


@pytest.fixture
def make_simulator(cert_root: Path, clock: ManualClock) -> Iterator[Callable[..., P1Simulator]]:
    started: list[P1Simulator] = []

    def make(**overrides: Any) -> P1Simulator:
        seed = overrides.pop("seed", 1)
        faults = overrides.pop("faults", None) or Faults()
        config = SimulatorConfig(
            seed=seed,
            cert_dir=overrides.pop("cert_dir", cert_root / f"seed-{seed}"),
            clock=overrides.pop("clock", clock),
            faults=faults,
            **overrides,
        )
        sim = P1Simulator(config).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def simulator(make_simulator: Callable[..., P1Simulator]) -> P1Simulator:
    return make_simulator()
