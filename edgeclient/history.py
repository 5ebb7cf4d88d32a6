"""The meter's own monthly maxima: read from its telegram at start and after each month
change, spooled, and sent by the upload loop (edgeclient.uploader.upload_meter_history).

Why not with every poll: the 13-month history changes once a month, and the telegram
is a second request to the dongle. Why spooled: the upload loop may be offline for
days; a read kept in the spool is sent when the server answers again, and a newer read
replaces it (the meter's history holds everything the older one did). Nothing is lost
if a read fails: the meter keeps its months, so the next attempt reads them again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import p1wire as wire
from edgeclient.homewizard import HomeWizardClient, MeterError
from edgeclient.spool import Spool
from edgeclient.telegram import parse_demand

logger = logging.getLogger(__name__)

BRUSSELS = ZoneInfo("Europe/Brussels")
# A failed read (no telegram yet: 503; a firmware without the endpoint: 404) is tried
# again this much later, not on every poll.
RETRY_AFTER_S = 600.0
# The meter closes a month when the month's first quarter ends: read after that.
MONTH_SETTLE = timedelta(minutes=15)


def utc_now() -> datetime:
    return datetime.now(UTC)


class HistoryReader:
    """When to read the telegram, and the read itself (``step``).

    run_edge runs it in a thread of its own with its own meter connection
    (edgeclient.cli.run.history_loop): a dongle slow to answer the telegram must not
    delay a poll."""

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
        self._read_month: tuple[int, int] | None = None
        self._retry_at: float | None = None
        self._failing: str | None = None

    def due(self) -> bool:
        if self._retry_at is not None and self._monotonic() < self._retry_at:
            return False
        return self._read_month != self._month()

    def step(self) -> bool:
        """Read and spool the history when due; True when a read was spooled."""
        if not self.due():
            return False
        month = self._month()
        try:
            text = self.meter.telegram()
        except MeterError as exc:
            self._retry_at = self._monotonic() + RETRY_AFTER_S
            if str(exc) != self._failing:
                logger.warning("meter telegram not read (tried again later): %s", exc)
                self._failing = str(exc)
            return False
        self._retry_at, self._failing = None, None
        demand = parse_demand(text)
        if not demand.history and demand.month_maximum is None:
            self._read_month = month  # read, and nothing to send until the month changes
            logger.info("the meter's telegram has no monthly maxima (not a Belgian meter?)")
            return False
        current = demand.month_maximum
        body = wire.meter_history_payload(
            read_at=self._now().isoformat(),
            months=demand.wire_months(),
            current=None
            if current is None
            else {
                "month": current.month,
                "peak_kw": current.kw,
                "peak_ts": None if current.at is None else current.at.isoformat(),
            },
        )
        try:
            self.spool.put_meter_history(body)
        except Exception:
            # Not read as far as the month goes: a spool that failed (locked, disk full)
            # must not skip this month until a restart; the caller logs the error.
            self._retry_at = self._monotonic() + RETRY_AFTER_S
            raise
        self._read_month = month
        logger.info(
            "the meter's history read: %d closed months%s",
            len(demand.history),
            "" if current is None else f", this month's maximum {current.kw:g} kW",
        )
        return True

    def _month(self) -> tuple[int, int]:
        local = (self._now() - MONTH_SETTLE).astimezone(BRUSSELS)
        return local.year, local.month
