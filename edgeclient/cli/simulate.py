"""``simulate`` (``manage.py simulate_p1``, ``python -m edgeclient simulate``): run the fake
HomeWizard P1 meter until SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import threading
import time
from argparse import ArgumentParser
from datetime import datetime
from pathlib import Path
from typing import Any

from edgeclient.cli import CommandError, Lines
from edgeclient.config import data_dir_from_env
from edgeclient.simcerts import CertificateToolError
from edgeclient.simprofiles import DEFAULT, PROFILES, profile_named
from edgeclient.simulator import Faults, P1Simulator, SimulatorConfig, startup_lines

HELP = "Serve a simulated HomeWizard P1 meter (API v1 over http, v2 over https)."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api", choices=("v1", "v2", "both"), default="both")
    parser.add_argument("--log", type=Path, help="append each served measurement's ts")
    parser.add_argument("--token", help="v2 token to accept (default: from the seed)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cert-dir", type=Path, help="default: DATA_DIR/simulator")
    parser.add_argument("--button-after", type=int, default=3, help="pairing attempts")
    parser.add_argument("--no-storage", action="store_true", help="pairing: no-storage")
    parser.add_argument("--slow", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of HTTP 500")
    parser.add_argument("--garbage-rate", type=float, default=0.0, help="share garbled")
    parser.add_argument("--offline-every", type=float, default=0.0, help="seconds")
    parser.add_argument("--offline-for", type=float, default=30.0, help="seconds")
    parser.add_argument("--start", help="simulated start time, ISO 8601 with offset")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated s per real s")
    parser.add_argument(
        "--profile",
        choices=tuple(PROFILES),
        default=DEFAULT,
        help="meter variant: " + "; ".join(f"{p.name}: {p.summary}" for p in PROFILES.values()),
    )
    parser.add_argument(
        "--swap-after",
        type=int,
        help="swap the meter after this many telegrams (meter-swap: 5)",
    )
    parser.add_argument(
        "--readings-log", type=Path, help="append each served reading as a JSON line"
    )
    parser.add_argument(
        "--fixture", type=Path, help="replay a recorded device (an edgeclient/fixtures/ folder)"
    )


def handle(options: dict[str, Any], out: Lines) -> int:
    """Serve until SIGTERM or Ctrl-C; 0 then. CommandError (exit 1): cannot start."""
    swap_after = options["swap_after"]
    if swap_after is not None and swap_after < 1:
        raise CommandError("--swap-after: must be at least 1")
    config = SimulatorConfig(
        port=options["port"],
        host=options["host"],
        api=options["api"],
        seed=options["seed"],
        cert_dir=options["cert_dir"] or data_dir_from_env() / "simulator",
        log_path=options["log"],
        token=options["token"],
        button_after=options["button_after"],
        no_storage=options["no_storage"],
        clock=_clock(options["start"], options["speed"]),
        faults=Faults(
            slow_s=options["slow"],
            error_rate=options["error_rate"],
            garbage_rate=options["garbage_rate"],
        ),
        profile=profile_named(options["profile"]),
        swap_after=swap_after,
        readings_log_path=options["readings_log"],
        fixture_dir=options["fixture"],
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        sim = P1Simulator(config).start()
    except (OSError, ValueError, CertificateToolError) as exc:
        raise CommandError(f"simulate_p1: {exc}") from exc
    _announce(out, sim)
    every, length = options["offline_every"], options["offline_for"]
    next_drop = time.monotonic() + every if every > 0 else None
    try:
        while not stop.wait(0.5):
            if next_drop is not None and time.monotonic() >= next_drop:
                out.write(f"dropping off the network for {length:g} s")
                sim.go_offline(length)
                next_drop += every + length
    finally:
        sim.stop()
    out.write(f"stopped after {sim.served_count} measurements")
    return 0


def _announce(out: Lines, sim: P1Simulator) -> None:
    for line in startup_lines(sim):
        out.write(line)
    out.flush()


def _clock(start: str | None, speed: float) -> Any:
    if speed <= 0:
        raise CommandError("--speed: must be positive")
    if start is None and speed == 1.0:
        return time.time
    try:
        moment = datetime.fromisoformat(start) if start else None
    except ValueError:
        moment = None
    if start and (moment is None or moment.tzinfo is None):
        raise CommandError(f"--start: expected ISO 8601 with an offset, got {start!r}")
    origin = moment.timestamp() if moment else time.time()
    real_origin = time.time()
    return lambda: origin + (time.time() - real_origin) * speed
