"""The poll step: read the meter, normalise, spool durably. Nothing here waits on the
server, so a slow or dead VPS never delays a reading.

``poll_once`` is the step itself; ``Poller`` keeps what lives between steps (the last
import register, the meter's identity and clock, the meter's state) and logs one line
per state change, not per poll:
- an optional value dropped from readings: once per field per DROP_LOG_INTERVAL (the
  spool counts every drop, edge_status shows the counts);
- the clock that stamps the samples (edgeclient.sampletime): when it changes;
- another meter (a new ``unique_id``): once, with the register check reset at once, so
  the new meter's lower registers are not quarantined;
- a refused reading: when the cause (field and kind of problem) changes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from edgeclient.homewizard import (
    HomeWizardClient,
    MeterAuthError,
    MeterConfigError,
    MeterError,
    MeterTLSError,
    Reading,
)
from edgeclient.normalise import (
    Dropped,
    Problem,
    SampleRejected,
    meter_identity,
    normalise_reading,
)
from edgeclient.sampletime import ClockState, SampleClock, Stamp
from edgeclient.spool import Spool

logger = logging.getLogger(__name__)

SPOOLED, DUPLICATE, REJECTED, METER_DOWN = "spooled", "duplicate", "rejected", "meter_down"
# A meter replaced by the grid operator starts its registers again from (near) zero.
# Its new unique_id says so at once; for a meter that sends none, after this many
# readings in a row say "went backwards", the new register is believed.
REGISTER_RESET_AFTER = 30
# A meter that sends a placeholder on every poll would otherwise log every 2 s.
DROP_LOG_INTERVAL = timedelta(hours=1)


@dataclass(frozen=True)
class PollResult:
    state: str
    sample: dict[str, Any] | None = None
    detail: str = ""
    rejected: SampleRejected | None = None
    dropped: Mapping[str, Dropped] = field(default_factory=dict)  # counted in the spool
    stamp: Stamp | None = None


def utc_now() -> datetime:
    return datetime.now(UTC)


def poll_once(
    meter: HomeWizardClient,
    spool: Spool,
    *,
    now: Callable[[], datetime] = utc_now,
    previous_import_kwh: float | None = None,
    clock: SampleClock | None = None,
) -> PollResult:
    """One reading from the meter into the spool (durable when this returns).

    MeterError propagates: the caller decides what an unreachable meter means. A reading
    the normaliser rejects is kept in the quarantine with the reason. Without ``clock``
    the reading is judged on its own (no memory of earlier readings).
    """
    reading = meter.measurement()
    return spool_reading(
        reading,
        spool,
        now=now(),
        previous_import_kwh=previous_import_kwh,
        clock=clock if clock is not None else SampleClock(),
    )


def spool_reading(
    reading: Reading,
    spool: Spool,
    *,
    now: datetime,
    previous_import_kwh: float | None,
    clock: SampleClock,
) -> PollResult:
    try:
        result = normalise_reading(
            reading.payload, api=reading.api, now=now, previous_import_kwh=previous_import_kwh
        )
    except SampleRejected as exc:
        spool.quarantine_reading(
            reading.payload, f"edge: {exc}", cause=f"{exc.field}:{exc.problem}"
        )
        return PollResult(REJECTED, detail=str(exc), rejected=exc)
    unusable = result.meter_time_problem
    stamp = clock.stamp(
        result.meter_time,
        now,
        {k: v for k, v in result.sample.items() if k != "ts"},
        meter_time_unusable=None if unusable is None else f"{unusable.problem}: {unusable.value}",
    )
    if stamp.ts is None:  # the same telegram again: one measurement
        clock.commit(stamp)
        return PollResult(DUPLICATE, result.sample, stamp=stamp)
    sample = result.sample | {"ts": stamp.ts.astimezone(UTC).isoformat()}
    added = spool.add(sample, dropped={f: str(d.problem) for f, d in result.dropped.items()})
    clock.commit(stamp)
    return PollResult(
        SPOOLED if added else DUPLICATE,
        sample,
        dropped=result.dropped if added else {},
        stamp=stamp,
    )


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
        self._rejecting: tuple[str, Problem] | None = None
        self._backwards = 0
        self._meter_id = spool.meter_identity()
        self._clock = _clock_from(spool)
        self._clock_state: ClockState | None = None
        self._drop_noted: dict[str, datetime] = {}

    @property
    def clock_state(self) -> ClockState:
        return self._clock.state

    def step(self) -> PollResult:
        try:
            reading = self.meter.measurement()
        except MeterError as exc:
            self._meter_down(exc)
            return PollResult(METER_DOWN, detail=str(exc))
        self._meter_up()
        now = self._now()
        self._check_meter_identity(reading.payload)
        result = spool_reading(
            reading,
            self.spool,
            now=now,
            previous_import_kwh=self.previous_import_kwh,
            clock=self._clock,
        )
        if result.rejected is not None:
            self._rejected(result.rejected)
            return result
        if self._rejecting is not None:
            logger.info("meter readings accepted again")
        self._rejecting, self._backwards = None, 0
        assert result.sample is not None and result.stamp is not None
        self.previous_import_kwh = result.sample["energy_import_kwh"]
        self._clock_noted(result.stamp)
        self._drops_noted(result.dropped, now)
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

    def _check_meter_identity(self, payload: Any) -> None:
        meter_id = meter_identity(payload)
        if meter_id is None or meter_id == self._meter_id:
            return
        previous, self._meter_id = self._meter_id, meter_id
        if previous is None:
            self.spool.record_meter_identity(meter_id, changed=False)
            return
        logger.warning(
            "meter changed: unique_id %s -> %s; its registers start afresh "
            "(the register check is reset)",
            previous,
            meter_id,
        )
        self.spool.record_meter_identity(meter_id, changed=True)
        self.previous_import_kwh, self._backwards = None, 0
        self._clock.forget_meter()

    def _clock_noted(self, stamp: Stamp) -> None:
        if stamp.state is self._clock_state:
            return
        first = self._clock_state is None
        self._clock_state = stamp.state
        self.spool.record_meter_clock(str(stamp.state), stamp.detail)
        if stamp.state is ClockState.METER:
            if not first:
                logger.info("samples carry the meter's timestamps again: %s", stamp.detail)
        elif stamp.state is ClockState.ABSENT:
            logger.info("%s: samples carry the edge's clock", stamp.detail)
        else:
            logger.warning("%s: samples carry the edge's clock", stamp.detail)

    def _drops_noted(self, dropped: Mapping[str, Dropped], now: datetime) -> None:
        for name, drop in dropped.items():
            noted = self._drop_noted.get(name)
            if noted is not None and now - noted < DROP_LOG_INTERVAL:
                continue
            self._drop_noted[name] = now
            # A placeholder is the meter saying "no value"; anything else is odd.
            log = logger.info if drop.problem is Problem.PLACEHOLDER else logger.warning
            log(
                "meter value %s dropped, reading kept (%s: %s); edge_status counts every "
                "drop, the log notes this field again in an hour at the earliest",
                name,
                drop.problem,
                drop.value,
            )

    def _rejected(self, exc: SampleRejected) -> None:
        cause = (exc.field, exc.problem)
        if cause != self._rejecting:
            logger.warning("meter reading rejected and quarantined: %s", exc)
        self._rejecting = cause
        if exc.problem is Problem.WENT_BACKWARDS:
            self._backwards += 1
            if self._backwards >= REGISTER_RESET_AFTER:
                logger.warning(
                    "import register lower for %d readings in a row: taking it as a new "
                    "meter and accepting its register",
                    self._backwards,
                )
                self.previous_import_kwh, self._backwards = None, 0
        else:
            self._backwards = 0


def _clock_from(spool: Spool) -> SampleClock:
    """The sample clock, remembering the last spooled sample across a restart."""
    latest = spool.latest()
    if latest is None:
        return SampleClock()
    sample = latest.sample
    return SampleClock(
        last_ts=datetime.fromisoformat(sample["ts"]),
        last_measurement={k: v for k, v in sample.items() if k != "ts"},
    )
