"""``manage.py demo``: the whole platform on one machine, until Ctrl-C.

Makes (or reuses) an admin, a device and its ingest token, fills 13 months of history,
then runs the simulated meter, the server and the edge and keeps them running. The units
of work live in demo.bootstrap, demo.history and demo.processes.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from demo import bootstrap, processes
from demo.bootstrap import DemoPaths
from p1common.env import env_int

# How often the loop looks for a child that died.
WATCH_INTERVAL_S = 0.5


class Command(BaseCommand):
    help = "Run the demo: admin, device, 13 months of history, meter, server and edge."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port", type=int, default=None, help="server port (default: DEMO_PORT or 8000)"
        )
        parser.add_argument("--months", type=int, default=13, help="history on the first run")
        parser.add_argument("--seed", type=int, default=1, help="the simulated household")
        parser.add_argument("--poll-interval", type=float, default=1.0, help="edge, seconds")
        parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")

    def handle(self, *args: Any, **options: Any) -> None:
        port = options["port"] if options["port"] is not None else env_int("DEMO_PORT", 8000)
        if not 0 <= port <= 65535:
            raise CommandError(f"--port: expected 0..65535, got {port}")
        if options["months"] < 1:
            raise CommandError(f"--months: must be at least 1, got {options['months']}")
        try:
            sock = processes.listen(port)
        except processes.DemoError as exc:
            raise CommandError(str(exc)) from exc
        try:
            self._run(sock, options)
        except KeyboardInterrupt:
            # Before any child runs; what was written stays (the next run goes on).
            raise CommandError("interrupted while preparing; run it again to go on") from None
        finally:
            sock.close()

    def _run(self, sock: socket.socket, options: dict[str, Any]) -> None:
        port = sock.getsockname()[1]
        base_url = f"http://127.0.0.1:{port}"
        paths = bootstrap.DemoPaths.under(settings.DATA_DIR)
        paths.create()
        held = bootstrap.claim_seed(paths, options["seed"])
        if held is not None:
            raise CommandError(
                f"{settings.DATA_DIR} holds the demo household of --seed {held}; give "
                f"--seed {options['seed']} a directory of its own: "
                f"DATA_DIR=var/seed-{options['seed']} scripts/demo.sh --seed {options['seed']}"
            )
        out = self.stdout
        out.write("preparing the database ...")
        call_command("migrate", interactive=False, verbosity=0)
        username, password = bootstrap.ensure_admin(paths)
        device = bootstrap.ensure_device(username)
        token = bootstrap.ensure_ingest_token(device, paths)
        started = time.monotonic()
        out.write(f"checking the history (a first run writes {options['months']} months) ...")
        filled = bootstrap.ensure_history(
            device, now=datetime.now(UTC), months=options["months"], seed=options["seed"]
        )
        if filled.start is None:
            out.write("history: up to date")
        else:
            out.write(
                f"history: {filled.inserted} samples from {filled.start:%Y-%m-%d %H:%M} UTC "
                f"in {time.monotonic() - started:.1f} s"
            )
        # From here on a signal asks for an orderly stop of whatever has started.
        stop = threading.Event()
        # SIGHUP: the terminal that ran the demo was closed.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda *_: stop.set())
        children: list[processes.Child] = []
        try:
            meter, meter_settings = processes.start_meter(paths, options["seed"])
            children.append(meter)
            server = processes.start_server(sock, paths, options["workers"])
            children.append(server)
            processes.wait_until_serving(base_url)
            edge = processes.start_edge(
                paths, meter_settings, base_url, token, options["poll_interval"]
            )
            children.append(edge)
        except processes.DemoError as exc:
            processes.stop(reversed(children))
            raise CommandError(str(exc)) from exc
        self._announce(base_url, username, password, device.device_id, paths)
        out.write("  processes:  " + ", ".join(f"{c.name} pid {c.process.pid}" for c in children))
        out.write(f"demo ready at {base_url}/")
        out.flush()
        dead = None
        while not stop.wait(WATCH_INTERVAL_S):
            dead = processes.first_exited(children)
            if dead is not None:
                break
        out.write("stopping ...")
        # The edge first: it stops polling and finishes its upload while the server runs.
        failed = processes.stop([edge, meter, server])
        if dead is not None:
            raise CommandError(
                f"{dead.name} exited unexpectedly (status {dead.process.returncode}); "
                f"see {dead.log_path}"
            )
        if failed:
            names = ", ".join(f"{c.name} (see {c.log_path})" for c in failed)
            raise CommandError(f"did not stop cleanly: {names}")
        out.write("demo stopped")

    def _announce(
        self, base_url: str, username: str, password: str, device_id: str, paths: DemoPaths
    ) -> None:
        out = self.stdout
        out.write("")
        out.write("P1 Platform demo is running; Ctrl-C stops it.")
        out.write(f"  dashboard:  {base_url}/")
        out.write(f"  admin:      {base_url}/admin/")
        out.write(f"  login:      {username} / {password}")
        out.write(f"              (the password is kept in {paths.password_file})")
        out.write(f"  device:     {device_id}, ingest token in {paths.token_file}")
        out.write(f"  logs:       {paths.root / 'logs'}")
