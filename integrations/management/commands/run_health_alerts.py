"""The health-alert process (integrations.health): every HEALTH_CHECK_INTERVAL_S it
evaluates every device's health as of now, then sends the due webhook messages through
peakguard.delivery. SIGTERM or SIGINT ends it after the cycle in progress.

No stale alert within HEALTH_STALE_AFTER_MIN of the start, nor of the end of a stretch
in which no device reported (several devices): after a server outage every meter looks
silent until its edge has uploaded. ``--once`` is a check on demand and has no grace."""

from __future__ import annotations

import logging
import signal
import threading
import time
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection
from django.utils import timezone

from integrations.health import HEALTH_NOTICES, evaluate
from peakguard.delivery import deliver_due

logger = logging.getLogger("integrations.health")
STARTED = "health alerts started"


class Command(BaseCommand):
    help = "Raise and clear health alerts: stale meter, lapsed P1 consent, meter change, backlog."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="one cycle, then exit (no start-up grace)"
        )

    def handle(self, *args: str, once: bool = False, **options: Any) -> None:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        interval = float(settings.HEALTH_CHECK_INTERVAL_S)
        logger.info("%s: every %g s", STARTED, interval)
        grace_from = None if once else timezone.now()
        while not stop.is_set():
            began = time.monotonic()
            try:
                now = timezone.now()
                outcome = evaluate(now, grace_from=grace_from)
                if outcome.fleet_silent:
                    # When the devices come back, give the slower edges time too.
                    grace_from = now
                if outcome.raised or outcome.cleared:
                    logger.info(
                        "health: %d raised, %d cleared", len(outcome.raised), len(outcome.cleared)
                    )
                deliver_due(HEALTH_NOTICES)
            except Exception:
                # A database hiccup must not end the process; the next cycle retries.
                logger.exception("health alert cycle failed")
                if once:
                    raise
            if once:
                return
            # The process sleeps between cycles: it must not hold a connection open.
            connection.close()
            stop.wait(max(0.1, interval - (time.monotonic() - began)))
