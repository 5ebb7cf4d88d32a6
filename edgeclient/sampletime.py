"""Which time a sample carries: the meter's own telegram time, or the edge's clock.

The meter's time is the better one while it is right: two polls of one telegram carry
the same time, so they are one measurement. But meters in the field send clocks that
were never set (2000-01-01), that stand still, or that drift. So the meter's time is
used only while it moves forward and agrees with the edge's clock (NTP) within
METER_CLOCK_TOLERANCE; otherwise the sample carries the edge's clock.

Per reading (``SampleClock.stamp``):
- same telegram: the meter's time did not advance and no value changed -> no new sample
  (``Stamp.ts`` is None). This holds whichever clock is in use: a reading that repeats
  the last one exactly, under the same meter time, is not a new measurement. A meter
  that sends no usable time (API v1 firmware) repeats its latest telegram to every poll
  until the next one: an identical reading within TELEGRAM_REPEAT_WINDOW of the first
  poll that saw it is that same telegram. Past the window an identical reading is a new
  measurement (a meter at rest still reports, and the quarters need its coverage). The
  same holds while the meter's clock is not trusted: a time that stands still names no
  telegram.
- the meter's time did not advance but a value changed -> the clock is ``stuck``;
  it went back -> ``backwards``; it is off the edge's by more than the tolerance ->
  ``drifting``; the meter sent a time that is not usable -> ``unusable``; it sent none
  (API v1 firmware) -> ``absent``. In each case the edge's clock stamps the sample.
- Back to the meter's time only after METER_CLOCK_TRUST_AFTER readings in a row that
  move forward and agree within half the tolerance. The hysteresis keeps a clock near
  the limit from flapping.
- A ts is always later than the one before: samples out of order would look like a
  register step to the server. When the chosen time is not later than the last one
  given out (the meter was a few seconds ahead of the edge when it stopped being
  trusted, it lags when it is trusted again, or the edge's clock stepped back), the
  sample's ts moves on from the last one at half the speed of the edge's clock until
  the chosen time overtakes it. Half speed, not a millisecond step: readings squeezed
  together would give their register deltas an impossible power, which the server
  takes as a meter change; at half speed the apparent power is at most twice the real
  one, and a gap of up to the tolerance closes within twice its length.

Pure: no I/O, no clock reads; the poller passes the edge's time in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

# DSMR 4 meters send a telegram every 10 s (DSMR 5 every second) and the dongle answers
# with the latest one, so a correct meter clock reads up to ~10 s behind the edge, plus
# the poll's latency and each clock's own error (a meter synchronised by the grid
# operator, an edge by NTP: a few seconds each). 30 s is three DSMR 4 telegram periods:
# it accepts every correct meter, yet a sample keeps its meter time only while that is
# at most half a minute from the truth, small against a 15-minute capacity quarter and
# well inside the server's 5-minute "not in the future" limit.
METER_CLOCK_TOLERANCE = timedelta(seconds=30)
METER_CLOCK_TRUST_AFTER = 3
# The smallest step between two ts, and the edge time assumed between the last spooled
# sample and the first reading after a restart (the real one is not known).
TS_STEP = timedelta(milliseconds=1)
# The longest time between two telegrams: DSMR 4 (and older) meters send one every 10 s,
# DSMR 5 (the Belgian e-MUCS meters) every second.
TELEGRAM_REPEAT_WINDOW = timedelta(seconds=10)
UNKNOWN_GAP = timedelta(seconds=1)


class ClockState(StrEnum):
    METER = "meter"  # samples carry the meter's own time
    ABSENT = "absent"  # the meter sends no time (API v1 firmware)
    UNUSABLE = "unusable"  # it sends one that cannot be read or is a placeholder
    STUCK = "stuck"  # its time stands still while its readings change
    BACKWARDS = "backwards"  # its time went back
    DRIFTING = "drifting"  # its time is off the edge's by more than the tolerance


@dataclass(frozen=True)
class _Memory:
    last_ts: datetime | None = None  # the last ts given out
    edge_now: datetime | None = None  # the edge's time at the last reading
    meter_time: datetime | None = None  # the meter's time in the last reading
    measurement: Mapping[str, Any] | None = None  # the last reading's values, without ts
    state: ClockState = ClockState.METER
    detail: str = "the meter's clock agrees with the edge's"
    good_in_a_row: int = 0  # readings in a row that moved forward within half the tolerance
    measurement_since: datetime | None = None  # edge time of the first poll of measurement


@dataclass(frozen=True)
class Stamp:
    """The time for one reading; None when it is the same telegram as the last one."""

    ts: datetime | None
    state: ClockState
    detail: str  # one sentence for the log and edge_status
    _next: _Memory


class SampleClock:
    """The memory between readings. ``stamp`` proposes, ``commit`` keeps: a reading that
    could not be spooled (a full disk) leaves the memory as it was."""

    def __init__(
        self,
        *,
        last_ts: datetime | None = None,
        last_measurement: Mapping[str, Any] | None = None,
    ) -> None:
        # After a restart the last spooled sample stands in for the last reading: its
        # ts as the last meter time too, so a re-poll of that telegram stays one sample.
        self._memory = _Memory(last_ts=last_ts, meter_time=last_ts, measurement=last_measurement)

    @property
    def state(self) -> ClockState:
        return self._memory.state

    def forget_meter(self) -> None:
        """Another meter answers now: its clock and readings start from nothing."""
        self._memory = replace(self._memory, meter_time=None, measurement=None, good_in_a_row=0)

    def commit(self, stamp: Stamp) -> None:
        self._memory = stamp._next

    def stamp(
        self,
        meter_time: datetime | None,
        edge_now: datetime,
        measurement: Mapping[str, Any],
        *,
        meter_time_unusable: str | None = None,
    ) -> Stamp:
        """``meter_time`` as the normaliser read it (None: absent or unusable, then
        ``meter_time_unusable`` says what the meter sent)."""
        memory = self._memory
        unchanged = measurement == memory.measurement
        if (
            unchanged
            and memory.state is ClockState.METER
            and meter_time is not None
            and meter_time == memory.meter_time
        ):
            # A trusted clock names its telegram: the same time is the same telegram.
            return Stamp(None, memory.state, memory.detail, memory)
        if (
            unchanged
            and (meter_time is None or meter_time == memory.meter_time)
            and memory.measurement_since is not None
            and timedelta(0) <= edge_now - memory.measurement_since < TELEGRAM_REPEAT_WINDOW
        ):
            # No usable meter time (none, or one that stands still): an unchanged
            # reading within a telegram period is that same telegram polled again.
            return Stamp(None, memory.state, memory.detail, memory)
        verdict, detail = _verdict(memory, meter_time, edge_now, meter_time_unusable)
        close = (
            verdict is ClockState.METER
            and meter_time is not None
            and abs(meter_time - edge_now) <= METER_CLOCK_TOLERANCE / 2
        )
        good = memory.good_in_a_row + 1 if close else 0
        if verdict is ClockState.METER:
            assert meter_time is not None
            if memory.state is ClockState.METER or good >= METER_CLOCK_TRUST_AFTER:
                state, chosen = ClockState.METER, meter_time
            else:  # still on the edge's clock, until the meter's has proven itself
                state, detail, chosen = memory.state, memory.detail, edge_now
        else:
            state, chosen = verdict, edge_now
        ts = _in_order(chosen, memory, edge_now)
        next_memory = _Memory(
            ts, edge_now, meter_time, dict(measurement), state, detail, good, edge_now
        )
        return Stamp(ts, state, detail, next_memory)


def _verdict(
    memory: _Memory, meter_time: datetime | None, edge_now: datetime, unusable: str | None
) -> tuple[ClockState, str]:
    if meter_time is None:
        if unusable is not None:
            return ClockState.UNUSABLE, f"the meter's timestamp is unusable ({unusable})"
        return ClockState.ABSENT, "the meter sends no timestamp"
    last = memory.meter_time
    if last is not None and meter_time == last:
        return ClockState.STUCK, (
            f"the meter's clock stands still at {meter_time.isoformat()} while its readings change"
        )
    if last is not None and meter_time < last:
        return ClockState.BACKWARDS, (
            f"the meter's clock went back from {last.isoformat()} to {meter_time.isoformat()}"
        )
    skew = meter_time - edge_now
    if abs(skew) > METER_CLOCK_TOLERANCE:
        direction = "ahead of" if skew > timedelta(0) else "behind"
        return ClockState.DRIFTING, (
            f"the meter's clock is {_span(abs(skew))} {direction} the edge's "
            f"(tolerance {METER_CLOCK_TOLERANCE.total_seconds():g} s)"
        )
    return ClockState.METER, "the meter's clock agrees with the edge's"


def _in_order(chosen: datetime, memory: _Memory, edge_now: datetime) -> datetime:
    last = memory.last_ts
    if last is None or chosen > last:
        return chosen
    elapsed = UNKNOWN_GAP if memory.edge_now is None else edge_now - memory.edge_now
    if elapsed <= timedelta(0):  # the edge's clock stepped back: how far it moved is unknown
        elapsed = UNKNOWN_GAP
    return last + max(TS_STEP, elapsed / 2)


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 3600:
        return f"{seconds:.0f} s"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"
