"""The meter's history read (edgeclient.history) as run_edge runs it: beside the polls,
never in their way, and never marked done before the spool holds it.

The meter is the simulator, in this process, serving API v1 (``/api/v1/telegram``, the
DSMR telegram with the e-MUCS monthly maxima); the spool is a real SQLite file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from edgeclient.cli.run import SHUTDOWN_GRACE_S, MeterIdentity, Uploaded, start_loops
from edgeclient.config import EdgeConfig
from edgeclient.history import RETRY_AFTER_S, HistoryReader
from edgeclient.homewizard import READ_TIMEOUT_S, HomeWizardClient, MeterConfig
from edgeclient.simulator import P1Simulator, SimulatorConfig
from edgeclient.spool import Spool
from p1common.processes import listening_socket
from tests.waiting import wait_until

POLL_INTERVAL_S = 0.1
POLLS = 10  # readings the poll loop must spool while the telegram is held
# The simulator's meter makes a telegram every simulated second: at this speed every
# poll sees a new one, so every poll is one spooled reading.
SPEED = 50
# The telegram answer is held this long at most; the client gives up after its read
# timeout first, which is what a poll loop reading the telegram itself would wait out.
HOLD_S = 3 * READ_TIMEOUT_S


class SlowTelegramMeter(P1Simulator):
    """A dongle that answers every poll at once but sits on the raw telegram until told."""

    def __init__(self, config: SimulatorConfig) -> None:
        super().__init__(config)
        self.telegram_asked = threading.Event()
        self.answer_telegram = threading.Event()

    def _telegram_text(self) -> tuple[int, str]:
        self.telegram_asked.set()
        self.answer_telegram.wait(HOLD_S)
        return super()._telegram_text()


def fast_clock() -> Callable[[], float]:
    began, start = time.monotonic(), time.time()
    return lambda: start + (time.monotonic() - began) * SPEED


def depth(path) -> int:
    with Spool(path, create=False) as spool:
        return spool.depth()


def pending_history(path) -> dict | None:
    with Spool(path, create=False) as spool:
        return spool.pending_meter_history()


def test_a_dongle_slow_on_the_telegram_delays_no_poll(tmp_path):
    sim = SlowTelegramMeter(SimulatorConfig(api="v1", seed=7, clock=fast_clock())).start()
    closed = listening_socket(listen=False)  # the server: refusing, uploads just fail
    spool_path = tmp_path / "spool.sqlite3"
    config = EdgeConfig(
        ingest_url=f"http://127.0.0.1:{closed.getsockname()[1]}/v1/ingest",
        device_token="t",
        ca_bundle=None,
        spool_path=spool_path,
        poll_interval_s=POLL_INTERVAL_S,
        upload_interval_s=60.0,
        backoff_max_s=60.0,
        meter=MeterConfig(host=sim.address, api="v1"),
    )
    with Spool(spool_path):
        pass  # migrated before the threads, as run_edge does
    stop = threading.Event()
    threads = start_loops(config, stop, MeterIdentity(), Uploaded())
    try:
        assert sim.telegram_asked.wait(10), "the history was never read"
        before, began = depth(spool_path), time.monotonic()
        # A poll loop that read the telegram itself would spool nothing until the
        # client's read timeout: this deadline is shorter than that timeout.
        wait_until(
            lambda: depth(spool_path) >= before + POLLS,
            timeout_s=READ_TIMEOUT_S * 0.8,
            what=f"{POLLS} readings spooled while the telegram is held",
        )
        elapsed = time.monotonic() - began
        gained = depth(spool_path) - before
        assert sim.answer_telegram.is_set() is False  # all of it while the telegram hung
        # At their interval: no more than a few polls' worth behind (a busy CI machine).
        assert gained >= elapsed / POLL_INTERVAL_S * 0.5, (gained, elapsed)
        sim.answer_telegram.set()
        body = wait_until(lambda: pending_history(spool_path), what="the history spooled")
        assert len(body["months"]) == 13
    finally:
        sim.answer_telegram.set()
        stop.set()
        for thread in threads:
            thread.join(SHUTDOWN_GRACE_S)
        sim.stop()
        closed.close()
    assert [t.name for t in threads if t.is_alive()] == []
    assert {t.name for t in threads} == {"poll", "upload", "history"}


REFUSE_WRITES = """
CREATE TRIGGER refuse_insert BEFORE INSERT ON meter_history
BEGIN SELECT RAISE(ABORT, 'spool write refused'); END;
CREATE TRIGGER refuse_update BEFORE UPDATE ON meter_history
BEGIN SELECT RAISE(ABORT, 'spool write refused'); END;
"""


def test_a_read_the_spool_failed_to_keep_is_read_again(tmp_path):
    now = datetime(2026, 4, 2, 10, 0, tzinfo=UTC)
    ticks = [0.0]
    spool_path = tmp_path / "spool.sqlite3"
    with (
        P1Simulator(SimulatorConfig(api="v1", seed=5, clock=now.timestamp)) as sim,
        HomeWizardClient(MeterConfig(host=sim.address, api="v1")) as meter,
        Spool(spool_path) as spool,
    ):
        reader = HistoryReader(meter, spool, now=lambda: now, monotonic=lambda: ticks[0])
        # A real write failure of the spool file, made from a second connection.
        with sqlite3.connect(spool_path) as other:
            other.executescript(REFUSE_WRITES)
        with pytest.raises(sqlite3.DatabaseError, match="spool write refused"):
            reader.step()
        assert spool.pending_meter_history() is None
        with sqlite3.connect(spool_path) as other:
            other.executescript("DROP TRIGGER refuse_insert; DROP TRIGGER refuse_update;")
        assert reader.step() is False  # not on every poll: after the retry delay
        ticks[0] += RETRY_AFTER_S
        assert reader.step() is True  # the same month, not skipped until a restart
        assert spool.pending_meter_history()["months"][-1]["month"] == "2026-03"
        assert reader.step() is False  # read for this month: not again
