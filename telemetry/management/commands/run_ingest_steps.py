"""The ingest-steps worker: the steps stored batches owe, for many batches at once
(INGEST_STEPS_WORKER=on; telemetry.pipeline).

Every INGEST_STEPS_INTERVAL_S it runs telemetry.pipeline.run_owed_steps over every
device with owed work, resting between chunks (INGEST_STEPS_DUTY_PERCENT, telemetry.
pacing), writes the token uses reads left in Redis (telemetry.token_cache), then waits
for the next interval. SIGTERM or SIGINT ends it after the chunk in
progress, or its rest; a kill at any moment loses nothing, because a batch's
record of owed work is deleted only in the commit of that work. More than one worker
is safe (each device's work is serialised and idempotent) but buys nothing on one
database.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from argparse import ArgumentParser

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from telemetry.pacing import Pace
from telemetry.pipeline import run_owed_steps
from telemetry.token_cache import write_deferred_uses

logger = logging.getLogger("telemetry.worker")
# Fewer commits (each one a WAL flush) against less work redone after a crash.
CHUNK_DEVICES = 100


class Command(BaseCommand):
    help = "Run the ingest steps stored batches owe, every INGEST_STEPS_INTERVAL_S (or --once)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--once", action="store_true", help="do what is owed, then exit")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="seconds from one cycle's start to the next (default INGEST_STEPS_INTERVAL_S)",
        )
        parser.add_argument(
            "--chunk",
            type=int,
            default=CHUNK_DEVICES,
            help=f"devices whose work commits together (default {CHUNK_DEVICES})",
        )
        parser.add_argument(
            "--duty-percent",
            type=int,
            default=None,
            help="share of a cycle spent working, resting between chunks "
            "(default INGEST_STEPS_DUTY_PERCENT; 100: no rests)",
        )

    def handle(
        self,
        *args: str,
        once: bool = False,
        interval: float | None = None,
        chunk: int = CHUNK_DEVICES,
        duty_percent: int | None = None,
        **options: object,
    ) -> None:
        period = settings.INGEST_STEPS_INTERVAL_S if interval is None else interval
        if period <= 0:
            raise CommandError(f"--interval: must be above 0 seconds, got {period:g}")
        if chunk < 1:
            raise CommandError(f"--chunk: must be at least 1 device, got {chunk}")
        duty = settings.INGEST_STEPS_DUTY_PERCENT if duty_percent is None else duty_percent
        if not 1 <= duty <= 100:
            raise CommandError(f"--duty-percent: must be from 1 to 100, got {duty}")
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        logger.info("ingest-steps worker: a cycle every %g s, working %d%% of it", period, duty)
        while not stop.is_set():
            began = time.monotonic()
            # --once drains what is owed: no interval to spread it over.
            pace = None if once else Pace.for_cycle(duty / 100, began, period, rest=stop.wait)
            run = run_owed_steps(chunk=chunk, stop=stop, pace=pace)
            write_deferred_uses()
            took = time.monotonic() - began
            # One line a cycle: what was owed, how long it took (the delay it adds), and
            # how much of that was rest.
            logger.info(
                "cycle: %d devices, %d batches, %d failed, %.3f s, rested %.3f s",
                run.devices,
                run.batches,
                run.failed_devices,
                took,
                0.0 if pace is None else pace.rested_s,
            )
            if once:
                return
            connection.close()
            stop.wait(max(0.0, period - took))
