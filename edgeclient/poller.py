"""The poll step: read the meter, normalise, spool durably. Nothing here waits on the
server, so a slow or dead VPS never delays a reading.

``poll_once`` is the step itself; ``Poller`` keeps what lives between steps (the last
import register, the meter's state) and logs one line per state change, not per poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgeclient.homewizard import (
    HomeWizardClient,
    MeterAuthError,
    MeterConfigError,
    MeterError,
    MeterTLSError,
)
from edgeclient.normalise import SampleRejected, normalise
from edgeclient.spool import Spool

logger = logging.getLogger(__name__)

SPOOLED, DUPLICATE, REJECTED, METER_DOWN = "spooled", "duplicate", "rejected", "meter_down"
# A meter replaced by the grid operator starts its registers again from (near) zero.
# After this many readings in a row say "went backwards", the new register is believed.
REGISTER_RESET_AFTER = 30


@dataclass(frozen=True)
class PollResult:
    state: str
    sample: dict[str, Any] | None = None
    detail: str = ""


def utc_now() -> datetime:
    return datetime.now(UTC)


def poll_once(
    meter: HomeWizardClient,
    spool: Spool,
    *,
    now: Callable[[], datetime] = utc_now,
    previous_import_kwh: float | None = None,
) -> PollResult:
    """One reading from the meter into the spool (durable when this returns).

    MeterError propagates: the caller decides what an unreachable meter means. A reading
    the normaliser rejects is kept in the quarantine with the reason.
    """
    reading = meter.measurement()
    try:
        sample = normalise(
            reading.payload, api=reading.api, now=now(), previous_import_kwh=previous_import_kwh
        )
    except SampleRejected as exc:
        spool.quarantine_reading(reading.payload, f"edge: {exc}")
        return PollResult(REJECTED, detail=str(exc))
    added = spool.add(sample)
    return PollResult(SPOOLED if added else DUPLICATE, sample)


class Poller:
    def __init__(
        self,
        meter: HomeWizardClient,
        spool: Spool,
        *,
        now: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.meter = meter
        self.spool = spool
        self._now = now
        self._monotonic = monotonic
        self.previous_import_kwh: float | None = None
        self._down_since: float | None = None
        self._rejecting: str | None = None
        self._backwards = 0

    def step(self) -> PollResult:
        try:
            result = poll_once(
                self.meter, self.spool, now=self._now, previous_import_kwh=self.previous_import_kwh
            )
        except MeterError as exc:
            self._meter_down(exc)
            return PollResult(METER_DOWN, detail=str(exc))
        self._meter_up()
        if result.state == REJECTED:
            self._rejected(result.detail)
        else:
            if self._rejecting is not None:
                logger.info("meter readings accepted again")
            self._rejecting, self._backwards = None, 0
            assert result.sample is not None
            self.previous_import_kwh = result.sample["energy_import_kwh"]
        return result

    def _meter_down(self, exc: MeterError) -> None:
        if self._down_since is not None:
            return
        self._down_since = self._monotonic()
        # Wrong trust or token will not fix itself: say so louder than a Wi-Fi drop.
        fatal = isinstance(exc, MeterTLSError | MeterAuthError | MeterConfigError)
        (logger.error if fatal else logger.warning)("meter unreachable: %s", exc)
        self.spool.record_meter(f"{type(exc).__name__}: {exc}")

    def _meter_up(self) -> None:
        if self._down_since is None:
            return
        logger.info("meter back after %.0f s", self._monotonic() - self._down_since)
        self._down_since = None
        self.spool.record_meter(None)

    def _rejected(self, detail: str) -> None:
        if self._rejecting is None:
            logger.warning("meter reading rejected and quarantined: %s", detail)
        self._rejecting = detail
        if "went backwards" in detail:
            self._backwards += 1
            if self._backwards >= REGISTER_RESET_AFTER:
                logger.warning(
                    "import register lower for %d readings in a row: taking it as a new "
                    "meter and accepting its register",
                    self._backwards,
                )
                self.previous_import_kwh, self._backwards = None, 0
