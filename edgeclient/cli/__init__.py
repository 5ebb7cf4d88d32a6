"""``python -m edgeclient run|status|pair|simulate``: the edge's commands without Django.

Each command is a module here with ``HELP``, ``add_arguments(parser)`` and
``handle(options, out) -> int`` (the exit code); ``manage.py run_edge``, ``edge_status``,
``hw_pair`` and ``simulate_p1`` are thin wrappers around the same modules
(edgeclient/management/commands/), so both forms take the same options, print the same
lines and exit with the same codes. This path never imports Django: the edge's RSS floor
would otherwise be django.setup()'s, and a Raspberry Pi has little memory to spare.

Only the chosen command's module is imported: ``run`` must not pay for the simulator.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

from edgeclient.config import ConfigError, log_level_from_env

PROG = "python -m edgeclient"
# Subcommand: (module in this package, the manage.py command it is).
COMMANDS = {
    "run": ("run", "run_edge"),
    "status": ("status", "edge_status"),
    "pair": ("pair", "hw_pair"),
    "simulate": ("simulate", "simulate_p1"),
}
# What the Django settings' LOGGING gives manage.py: the same lines on stderr.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class CommandError(Exception):
    """A command cannot go on: one line on stderr and ``returncode`` (1 unless given).

    Printed as ``CommandError: <message>``, as manage.py prints Django's CommandError,
    which the wrappers translate this into.
    """

    def __init__(self, message: str, returncode: int = 1) -> None:
        super().__init__(message)
        self.returncode = returncode


class Lines(Protocol):
    """Where a command writes its output: one line per ``write`` (Django's OutputWrapper
    under manage.py, ``Output`` here)."""

    def write(self, msg: str = "") -> Any: ...

    def flush(self) -> Any: ...


class Output:
    """A stream written a line at a time; each line is flushed (a pipe's reader, such as
    a test waiting for the simulator's banner, must see it at once)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, msg: str = "", ending: str = "\n") -> None:
        if ending and not msg.endswith(ending):
            msg += ending
        self._stream.write(msg)
        self._stream.flush()

    def flush(self) -> None:
        self._stream.flush()


def configure_logging() -> None:
    """Root logging to stderr at LOG_LEVEL, as the Django settings configure it."""
    level = log_level_from_env()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request at INFO: one line per poll and upload is noise.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def command_module(name: str) -> Any:
    """The module of subcommand ``name`` (run, status, pair, simulate)."""
    return importlib.import_module(f"edgeclient.cli.{COMMANDS[name][0]}")


def _usage() -> str:
    lines = [f"usage: {PROG} {{{','.join(COMMANDS)}}} [options]", "", "commands:"]
    for name, (_, manage_name) in COMMANDS.items():
        lines.append(f"  {name:<9} the same as manage.py {manage_name}")
    lines.append(f"\n{PROG} COMMAND --help shows a command's options.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit code (2: a setting or usage to fix)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(_usage(), file=sys.stderr)
        print(f"{PROG}: error: unknown command {name!r}", file=sys.stderr)
        return 2
    module = command_module(name)
    parser = argparse.ArgumentParser(prog=f"{PROG} {name}", description=module.HELP)
    module.add_arguments(parser)
    options = vars(parser.parse_args(rest))  # a usage error exits 2, as under manage.py
    try:
        configure_logging()
    except ConfigError as exc:  # the line manage.py prints when its settings refuse it
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return module.handle(options, Output(sys.stdout))
    except ConfigError as exc:
        return _fail(CommandError(str(exc), returncode=2))
    except CommandError as exc:
        return _fail(exc)


def _fail(exc: CommandError) -> int:
    print(f"CommandError: {exc}", file=sys.stderr)
    return exc.returncode
