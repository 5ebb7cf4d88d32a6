"""``run`` (``manage.py run_edge``, ``python -m edgeclient run``): poll the meter and upload
the spool, until SIGTERM or Ctrl-C.

Three threads that share nothing but the spool file, each with its own connection: the
poll loop (meter -> normalise -> spool), the history loop (the meter's telegram -> its
monthly maxima -> spool, edgeclient.history) and the upload loop (spool -> server). A
slow or dead server, or a dongle slow to answer the telegram, therefore never delays a
poll. No error ends any of them, but one: the first device to answer at HW_P1_HOST
saying it is not a P1 meter.

What the device is (GET /api) is asked at start, and again at the first answer after
every outage (an address may be handed to another device while the meter is away). A
meter that does not answer at start does not stop the edge: it keeps asking, takes no
reading until the device has said it is a P1 meter, and polls as usual from then on.
A device that is not a P1 meter ends run_edge with one line and exit code 2 when it is
the first to answer (a setting to fix); after a P1 meter has answered, another product
at its address only pauses the readings (logged once, shown by edge_status) while the
spool's backlog goes on uploading.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from argparse import ArgumentParser
from typing import Any

from edgeclient.backoff import retry_delay
from edgeclient.cli import CommandError, Lines
from edgeclient.config import ConfigError, EdgeConfig
from edgeclient.history import HistoryReader
from edgeclient.homewizard import (
    DeviceInfo,
    HomeWizardClient,
    MeterAuthError,
    MeterConfigError,
    MeterError,
    MeterTLSError,
    MeterWrongProduct,
    require_p1_meter,
)
from edgeclient.poller import METER_DOWN, Poller
from edgeclient.spool import Spool, SpoolError
from edgeclient.uploader import IngestClient, MeterHistorySender, Uploader

logger = logging.getLogger("edgeclient.run_edge")

# How long SIGTERM waits for a poll (meter timeouts are 3 + 5 s) and an upload in flight.
# Container runtimes send SIGKILL after 10 s; an abandoned upload is simply sent again,
# an abandoned telegram read simply read again at the next start.
SHUTDOWN_GRACE_S = 8.0
# After an unexpected error (disk full, a bug) a loop waits this long, then goes on.
LOOP_ERROR_PAUSE_S = 5.0


HELP = "Run the edge: poll the HomeWizard P1 meter, spool durably, upload to the server."


def add_arguments(parser: ArgumentParser) -> None:
    """run_edge takes no options: everything comes from the environment."""


def handle(options: dict[str, Any], out: Lines) -> int:
    """Poll and upload until SIGTERM or Ctrl-C; 0 then. Raises CommandError (exit 2) for a
    bad setting, an unusable spool or a device at HW_P1_HOST that is not a P1 meter."""
    # httpx logs every request at INFO: one line per poll is what this must not do.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    identity = MeterIdentity()
    try:
        config = EdgeConfig.from_env()
        assert config.meter is not None
        with Spool(config.spool_path) as spool:  # migrates once, before the threads
            depth = spool.depth()
            with HomeWizardClient(config.meter) as meter:
                identity.confirm(meter, spool)
    except (ConfigError, SpoolError, MeterWrongProduct) as exc:
        raise CommandError(str(exc), returncode=2) from None

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    uploaded = Uploaded()
    threads = start_loops(config, stop, identity, uploaded)
    logger.info(
        "run_edge started: polling %s every %g s, uploading to %s every %g s; "
        "spool %s holds %d samples",
        config.meter.host,
        config.poll_interval_s,
        config.ingest_url,
        config.upload_interval_s,
        config.spool_path,
        depth,
    )
    next_progress = time.monotonic() + config.progress_interval_s
    while not stop.wait(min(1.0, config.progress_interval_s)):
        if time.monotonic() >= next_progress:
            next_progress += config.progress_interval_s
            log_progress(config, uploaded.take())
    deadline = time.monotonic() + SHUTDOWN_GRACE_S
    for thread in threads:  # the poll thread first: its write is the one that matters
        thread.join(max(0.0, deadline - time.monotonic()))
    busy = [t.name for t in threads if t.is_alive()]
    with Spool(config.spool_path) as spool:
        depth = spool.depth()
    logger.info(
        "run_edge stopped; %d samples pending in the spool%s",
        depth,
        f" (abandoned: {', '.join(busy)})" if busy else "",
    )
    if identity.refused is not None:
        raise CommandError(str(identity.refused), returncode=2)
    return 0


class MeterIdentity:
    """Whether the device at HW_P1_HOST has said (GET /api) that it is a P1 meter.

    Until it has, no reading is taken. While it does not answer at start, that is
    logged once and recorded in the spool for edge_status, as the poller does for an
    outage later on; after an outage the poller reports, and ``forget`` makes the next
    answer be checked again.
    """

    def __init__(self) -> None:
        self.info: DeviceInfo | None = None  # None: ask at the next answer
        self.last_info: DeviceInfo | None = None
        self.refused: MeterWrongProduct | None = None
        self._ever_confirmed = False
        self._recorded = False

    def confirm(self, meter: HomeWizardClient, spool: Spool) -> bool:
        """True once the device is known to be a P1 meter.

        Raises MeterWrongProduct when the first device to answer is not one: a setting
        to fix. Once a P1 meter has answered, another product at its address later (a
        DHCP lease handed on during an outage) only pauses the readings: the spool's
        backlog still uploads, and the address is asked again every poll.
        """
        if self.info is not None:
            return True
        try:
            info = require_p1_meter(meter)
        except MeterWrongProduct as exc:
            if not self._ever_confirmed:
                self.refused = exc
                raise
            if not self._recorded:
                spool.record_meter(f"{type(exc).__name__}: {exc}")
                self._recorded = True
                logger.error(
                    "%s; no reading is taken until the P1 meter answers there again, "
                    "asking every poll (uploads go on)",
                    exc,
                )
            return False
        except MeterError as exc:
            if not self._ever_confirmed and not self._recorded:
                spool.record_meter(f"{type(exc).__name__}: {exc}")
                self._recorded = True
                fatal = isinstance(exc, MeterTLSError | MeterAuthError | MeterConfigError)
                (logger.error if fatal else logger.warning)(
                    "meter not answering GET /api (%s); no reading is taken until it says it "
                    "is a P1 meter, asking again every poll",
                    exc,
                )
            return False
        if self._recorded:
            spool.record_meter(None)
            self._recorded = False
            if self._ever_confirmed:
                logger.info("the P1 meter answers again at %s", meter.config.host)
        if info != self.last_info:
            logger.info(
                "meter at %s is a %s, serial %s, firmware %s, API %s",
                meter.config.host,
                info.product_type,
                info.serial,
                info.firmware_version,
                info.api_version,
            )
        self.info = self.last_info = info
        self._ever_confirmed = True
        return True

    def forget(self) -> None:
        self.info = None


def poll_loop(config: EdgeConfig, stop: threading.Event, identity: MeterIdentity) -> None:
    """Poll at a fixed rate; a late poll is not made up with a burst.

    Ends (and sets ``stop``) only when the first device to answer is not a P1 meter.
    """
    assert config.meter is not None
    guard = LoopGuard("poll")
    while not stop.is_set():
        # Opening the spool can fail too (a full or read-only disk): retry, never exit.
        try:
            with Spool(config.spool_path) as spool, HomeWizardClient(config.meter) as meter:
                poller = Poller(meter, spool)
                next_at = time.monotonic()
                while not stop.is_set():
                    try:
                        if identity.confirm(meter, spool) and poller.step().state == METER_DOWN:
                            identity.forget()  # ask what it is at its first answer
                        guard.ok()
                    except MeterWrongProduct:
                        logger.error("%s; run_edge stops", identity.refused)
                        stop.set()
                        return
                    except Exception as exc:  # the loop must outlive any error
                        guard.failed(exc)
                    next_at = max(next_at + config.poll_interval_s, time.monotonic())
                    stop.wait(next_at - time.monotonic())
        except Exception as exc:  # the loop must outlive any error
            guard.failed(exc)
            stop.wait(LOOP_ERROR_PAUSE_S)


def start_loops(
    config: EdgeConfig, stop: threading.Event, identity: MeterIdentity, uploaded: Uploaded
) -> list[threading.Thread]:
    """The poll, upload and history threads, started; all end when ``stop`` is set."""
    threads = [
        threading.Thread(target=poll_loop, args=(config, stop, identity), name="poll", daemon=True),
        threading.Thread(
            target=upload_loop, args=(config, stop, uploaded), name="upload", daemon=True
        ),
        threading.Thread(
            target=history_loop, args=(config, stop, identity), name="history", daemon=True
        ),
    ]
    for thread in threads:
        thread.start()
    return threads


def history_loop(config: EdgeConfig, stop: threading.Event, identity: MeterIdentity) -> None:
    """Read the meter's monthly maxima when due (at start, after each month change).

    Its own thread and its own meter connection (the same verified TLS): the telegram is
    a second request to the dongle, and one that answers it slowly (up to the meter
    timeouts) or not at all must not take a poll's turn. It reads only while the poll
    loop knows the device to be a P1 meter; whether a read is due is a clock check, so
    asking every poll interval costs nothing.
    """
    assert config.meter is not None
    guard = LoopGuard("history")
    while not stop.is_set():
        try:
            with Spool(config.spool_path) as spool, HomeWizardClient(config.meter) as meter:
                history = HistoryReader(meter, spool)
                while not stop.is_set():
                    try:
                        if identity.info is not None:
                            history.step()
                        guard.ok()
                    except Exception as exc:  # the loop must outlive any error
                        guard.failed(exc)
                    stop.wait(config.poll_interval_s)
        except Exception as exc:  # the loop must outlive any error
            guard.failed(exc)
            stop.wait(LOOP_ERROR_PAUSE_S)


class Uploaded:
    """Samples the upload thread delivered since the last progress line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def add(self, count: int) -> None:
        with self._lock:
            self._count += count

    def take(self) -> int:
        with self._lock:
            count, self._count = self._count, 0
        return count


def progress_line(
    uploaded: int, interval_s: float, pending: int, oldest_age_s: float | None
) -> str:
    """The periodic line: what went up since the last one, what waits, how old."""
    minutes = interval_s / 60
    since = f"{minutes:g} min" if minutes >= 1 else f"{interval_s:g} s"
    oldest = "" if oldest_age_s is None else f", oldest pending {oldest_age_s:.0f} s old"
    return f"run_edge: {uploaded} samples uploaded in the last {since}; {pending} pending{oldest}"


def log_progress(config: EdgeConfig, uploaded: int) -> None:
    try:
        with Spool(config.spool_path) as spool:
            pending, age = spool.depth(), spool.oldest_pending_age()
    except Exception as exc:  # the line is information; its failure must not stop the edge
        logger.warning("run_edge: progress unknown (%s)", exc)
        return
    logger.info(progress_line(uploaded, config.progress_interval_s, pending, age))


def upload_loop(
    config: EdgeConfig, stop: threading.Event, uploaded: Uploaded | None = None
) -> None:
    guard = LoopGuard("upload")
    while not stop.is_set():
        try:
            with Spool(config.spool_path) as spool, IngestClient.from_config(config) as client:
                uploader = Uploader(spool, client, config)
                history = MeterHistorySender(spool, client, config)
                while not stop.is_set():
                    stop.wait(upload_round(uploader, history, guard, uploaded))
        except Exception as exc:  # the loop must outlive any error
            guard.failed(exc)
            stop.wait(LOOP_ERROR_PAUSE_S)


def upload_round(
    uploader: Uploader,
    history: MeterHistorySender,
    guard: LoopGuard,
    uploaded: Uploaded | None = None,
) -> float:
    """One sample step, then the meter's history when the samples are caught up; the
    seconds to wait before the next round.

    The history goes only after a sample step that succeeded with no backlog left: never
    a second timeout beside a failing sample upload, never a request between the batches
    of a drain. Its failures (any exception included) stay in MeterHistorySender, with
    its own backoff: they never change the samples' delay.
    """
    try:
        result, delay = uploader.step()
        if uploaded is not None:
            uploaded.add(result.delivered)
        guard.ok()
    except Exception as exc:  # the loop must outlive any error
        guard.failed(exc)
        return max(LOOP_ERROR_PAUSE_S, retry_delay(guard.failures, random.random))
    if uploader.caught_up:
        history.step()
    return delay


class LoopGuard:
    """Logs an unexpected error when it first appears (with traceback), not every time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        self._last: str | None = None

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        text = f"{type(exc).__name__}: {exc}"
        if text != self._last:
            logger.exception("%s loop error (it goes on): %s", self.name, text)
            self._last = text

    def ok(self) -> None:
        if self._last is not None:
            logger.info("%s loop recovered after %d errors", self.name, self.failures)
        self.failures, self._last = 0, None
