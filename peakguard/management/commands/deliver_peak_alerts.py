"""Deliver peak alerts from a process of its own (PEAKGUARD_IN_PROCESS_DELIVERY=false).

The server processes deliver alerts themselves by default; this command is for
deployments that want delivery outside the web workers. SIGTERM or SIGINT ends it
after the attempt in progress.
"""

from __future__ import annotations

import signal
import threading
from argparse import ArgumentParser

from django.core.management.base import BaseCommand
from django.db import connection

from peakguard.delivery import deliver_due

POLL_S = 5.0


class Command(BaseCommand):
    help = "Send due peak-guard alerts to their webhooks, in a loop (or --once)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--once", action="store_true", help="send what is due, then exit")

    def handle(self, *args: str, once: bool = False, **options: object) -> None:
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.is_set():
            wait = deliver_due()
            if once:
                return
            connection.close()
            stop.wait(POLL_S if wait is None else min(wait, POLL_S))
