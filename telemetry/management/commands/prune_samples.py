"""Delete raw samples older than RAW_SAMPLE_RETENTION_MONTHS (telemetry.retention).

Once by default (deploy/systemd/p1-prune.timer starts it daily); with ``--every`` it
repeats until SIGTERM or SIGINT. A signal ends the wait between runs at once, and a run
when it is done. Killing it mid-run is harmless too: each batch is its own transaction,
and the next run carries on from what is left.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection
from django.utils import timezone

from telemetry.retention import prune_raw_samples

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PERIOD = re.compile(r"^(\d+)([smhd]?)$")


def period_seconds(text: str) -> int:
    """'1d', '12h', '30m', '90s' or plain seconds; at least a minute."""
    found = _PERIOD.match(text.strip())
    if not found:
        raise CommandError(f"--every: expected a period like 1d, 12h or 30m, got {text!r}")
    seconds = int(found.group(1)) * _UNITS[found.group(2) or "s"]
    if seconds < 60:
        raise CommandError(f"--every: must be at least a minute, got {text!r}")
    return seconds


class Command(BaseCommand):
    help = (
        "Delete raw samples older than RAW_SAMPLE_RETENTION_MONTHS; quarters, hours, "
        "capacity months and register breaks stay. Once, or --every period."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--every", help="repeat with this period (1d, 12h, 30m) until SIGTERM or SIGINT"
        )

    def handle(self, *args: Any, every: str | None = None, **options: Any) -> None:
        period = period_seconds(every) if every is not None else None
        if period is None:
            self._run()
            return
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.is_set():
            try:
                self._run()
            except DatabaseError as exc:
                # The database may be restarting: the next period tries again.
                first_line = str(exc).strip().splitlines()[:1] or [type(exc).__name__]
                print(
                    f"prune_samples: database error, next try in {every}: {first_line[0]}",
                    file=sys.stderr,
                    flush=True,
                )
            connection.close()
            stop.wait(period)

    def _run(self) -> None:
        pruned = prune_raw_samples(timezone.now())
        if pruned is None:
            self.stdout.write("nothing pruned: RAW_SAMPLE_RETENTION_MONTHS is unset or 0 (forever)")
        else:
            months = settings.RAW_SAMPLE_RETENTION_MONTHS
            self.stdout.write(
                f"pruned {pruned.samples} raw samples older than {pruned.before.isoformat()} "
                f"(retention {months} months: horizon {pruned.horizon.isoformat()})"
            )
        self.stdout.flush()
