"""The one process harness: start our programs as child processes, wait until they are
ready, stop them in order. Tests, benchmarks, the chaos run, the screenshots and the demo
all start the server, the simulated meter and the edge through here.

Our programs are started as commands (``manage.py simulate_p1``, ``manage.py run_edge``,
gunicorn), never imported: this module imports no app of ours, so every layer may use it.

- ``start_child`` starts one command; its output is read line by line by a thread into
  an ``OutputLog`` (kept in memory and, when asked, appended to a log file).
- Readiness is a line in that output (``Child.wait_for_line``) or the listen backlog of a
  socket bound before the server starts; a deadline ends the wait with ``ChildFailed``,
  naming the child and ending with the tail of its log.
- ``Child.stop``: SIGTERM, wait, SIGKILL. ``ChildStack`` stops several children in the
  reverse order of their start when its block ends.
- Every child runs in a session of its own (a Ctrl-C in the terminal reaches only the
  parent, which stops the children in order) and is signalled when the parent dies
  (p1common.child_processes.stop_with_parent).

The simulator prints its settings in one machine-readable line (``SIMULATOR_PREFIX`` and
a JSON object, after its human-readable lines); ``parse_simulator_line`` is the one
reader of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, Self
from urllib.parse import quote

import httpx

from p1common.child_processes import stop_process, stop_with_parent

ROOT = Path(__file__).resolve().parent.parent
# run_edge may wait for a meter answer and an upload in flight before it exits.
STOP_TIMEOUT_S = 25.0
# simulate_p1 makes its certificates (openssl) before it prints its settings; a busy
# two-core machine may need most of this.
READY_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0
# A child that closed its output is reaped within this (only to report its status).
EXIT_AFTER_CLOSE_S = 5.0
# How long a wait for a line (an event in a child's output) lasts by default.
EVENT_TIMEOUT_S = 30.0
TAIL_LINES = 30
LISTEN_BACKLOG = 256

# The first characters of the simulator's machine-readable settings line; the simulator
# prints the same text (edgeclient.simulator.SETTINGS_LINE_PREFIX, a test checks both).
SIMULATOR_PREFIX = "p1-simulator-settings: "

EDGE_BASE_ENV = {
    "P1_ROLE": "edge",
    "DJANGO_SETTINGS_MODULE": "p1platform.settings",
    "PYTHONUNBUFFERED": "1",
    "LOG_LEVEL": "info",
}

# Debian's chromium and chromium-driver, as the browser tests and the screenshots use them.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


Read = Literal["all", "stderr", "none", "inherit"]


class ChildFailed(RuntimeError):
    """A child did not become ready in time, or exited; the message names it and ends
    with the tail of its log."""


# -- output ----------------------------------------------------------------------------


class OutputLog:
    """Every line a child writes to one stream, with the time it arrived.

    ``log_path``: also append each line there (``stamped``: after the Unix time), so an
    operator can read what happened after the run.
    """

    def __init__(
        self,
        stream: IO[str],
        log_path: Path | None = None,
        *,
        stamped: bool = False,
        header: str = "",
    ) -> None:
        self.lines: list[tuple[float, str]] = []
        self.closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._read, args=(stream, log_path, stamped, header), daemon=True
        )
        self._thread.start()

    def _read(self, stream: IO[str], log_path: Path | None, stamped: bool, header: str) -> None:
        log = log_path.open("a", encoding="utf-8") if log_path is not None else None
        try:
            if log is not None and header:
                log.write(header)
            for line in stream:
                now = time.time()
                if log is not None:
                    log.write(f"{now:.3f} {line}" if stamped else line)
                    log.flush()
                with self._changed:
                    self.lines.append((now, line.rstrip("\n")))
                    self._changed.notify_all()
        finally:
            if log is not None:
                log.close()
            with self._changed:
                self.closed = True
                self._changed.notify_all()

    def wait_closed(self, timeout_s: float = EVENT_TIMEOUT_S) -> list[str]:
        """Every line, once the child closed the stream (it exited)."""
        self._thread.join(timeout_s)
        with self._changed:
            return [line for _, line in self.lines]

    def text(self) -> str:
        with self._changed:
            return "\n".join(line for _, line in self.lines)

    def tail(self, count: int = TAIL_LINES) -> str:
        with self._changed:
            return "\n".join(line for _, line in self.lines[-count:])

    def matching(self, pattern: str) -> list[str]:
        with self._changed:
            return [line for _, line in self.lines if re.search(pattern, line)]

    def wait_for(self, pattern: str, timeout_s: float = EVENT_TIMEOUT_S, count: int = 1) -> str:
        """The ``count``-th line matching ``pattern``; ChildFailed after ``timeout_s`` or
        when the stream closes first."""
        line = self.wait_for_or_close(pattern, timeout_s, count)
        if line is None:
            ended = "the stream closed" if self.closed else f"none in {timeout_s:g} s"
            raise ChildFailed(f"no line matching {pattern!r} ({ended}):\n{self.tail()}")
        return line

    def wait_for_or_close(self, pattern: str, timeout_s: float, count: int = 1) -> str | None:
        def found() -> list[str]:
            return [ln for _, ln in self.lines if re.search(pattern, ln)]

        with self._changed:
            self._changed.wait_for(lambda: len(found()) >= count or self.closed, timeout_s)
            lines = found()
            return lines[count - 1] if len(lines) >= count else None


# -- one child -------------------------------------------------------------------------


@dataclass
class Child:
    """A started command; ``output`` reads its stdout and stderr (or stderr alone)."""

    name: str
    process: subprocess.Popen
    output: OutputLog | None
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def log(self) -> OutputLog:
        if self.output is None:
            raise ChildFailed(f"{self.name}: its output is not read")
        return self.output

    def failure(self, what: str) -> ChildFailed:
        """ChildFailed naming this child, with the tail of its output."""
        tail = self.output.tail() if self.output is not None else "(output not read)"
        where = f"; log: {self.log_path}" if self.log_path is not None else ""
        return ChildFailed(f"{self.name} (pid {self.pid}) {what}{where}:\n{tail}")

    def wait_for_line(self, pattern: str, timeout_s: float = READY_TIMEOUT_S) -> str:
        """The first line matching ``pattern``; ChildFailed if the child exits or the
        deadline passes first."""
        line = self.log.wait_for_or_close(pattern, timeout_s)
        if line is None:
            if self.log.closed:  # it closed its output: it has exited or is about to
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(EXIT_AFTER_CLOSE_S)
            if self.returncode is not None:
                raise self.failure(f"exited ({self.returncode}) before a line matching {pattern!r}")
            raise self.failure(f"did not answer: no line matching {pattern!r} in {timeout_s:g} s")
        return line

    def stop(self, timeout_s: float = STOP_TIMEOUT_S, signum: int = signal.SIGTERM) -> bool:
        """``signum``, wait, SIGKILL after ``timeout_s``; True when it had to be killed."""
        killed = stop_process(self.process, timeout_s, signum)
        if self.output is not None:
            self.output.wait_closed(timeout_s)
        return killed

    def terminate(self, signum: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        """Send ``signum`` and wait for the exit; its status (TimeoutExpired if none)."""
        self.process.send_signal(signum)
        return self.process.wait(timeout_s)

    def kill(self, timeout_s: float = 10.0) -> float:
        """SIGKILL; the wall-clock time just before the signal."""
        at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout_s)
        return at

    def exited_cleanly(self) -> bool:
        return self.returncode in (0, -signal.SIGTERM)


def child_env(base: Mapping[str, str] | None = None, /, **changes: str | None) -> dict[str, str]:
    """``base`` (this process's environment by default) with ``changes``; None removes."""
    env = dict(os.environ if base is None else base)
    env["PYTHONUNBUFFERED"] = "1"
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def start_child(
    name: str,
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    log_path: Path | None = None,
    stamped: bool = False,
    read: Read = "all",
    cwd: Path = ROOT,
    pass_fds: Sequence[int] = (),
    **popen: Any,
) -> Child:
    """Start ``command``. ``read``: which output the harness reads (``all``: stdout and
    stderr as one stream; ``stderr``: stdout is discarded; ``none``: both go to
    ``log_path``, or are discarded; ``inherit``: both go where this process's go, e.g.
    into pytest's captured output)."""
    log = log_path.open("ab") if read == "none" and log_path is not None else None
    sink: Any = log if log is not None else subprocess.DEVNULL
    if read == "inherit":
        sink = None
    try:
        process = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if read == "all" else sink,
            stderr={"all": subprocess.STDOUT, "stderr": subprocess.PIPE}.get(read, sink),
            text=True,
            errors="replace",  # a stray byte must not stop the reader thread
            start_new_session=True,
            preexec_fn=stop_with_parent(),
            pass_fds=tuple(pass_fds),
            **popen,
        )
    finally:
        if log is not None:
            log.close()  # the child holds its own descriptor
    stream = {"all": process.stdout, "stderr": process.stderr}.get(read)
    header = f"---- pid {process.pid} started {time.time():.3f}\n" if stamped else ""
    output = OutputLog(stream, log_path, stamped=stamped, header=header) if stream else None
    return Child(name, process, output, log_path)


def stop_in_order(children: Iterable[Child], timeout_s: float = STOP_TIMEOUT_S) -> list[Child]:
    """Stop each child in turn; those that had to be killed or exited with an error."""
    failed = []
    for child in children:
        killed = child.stop(timeout_s)
        if killed or not child.exited_cleanly():
            failed.append(child)
    return failed


def first_exited(children: Iterable[Child]) -> Child | None:
    return next((child for child in children if not child.running()), None)


class ChildStack:
    """Children stopped in the reverse order of ``add`` when the block ends."""

    def __init__(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.children: list[Child] = []
        self.timeout_s = timeout_s

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def stop(self) -> list[Child]:
        failed = stop_in_order(reversed(self.children), self.timeout_s)
        self.children.clear()
        return failed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def manage(*args: str, python: str = sys.executable) -> list[str]:
    return [python, "manage.py", *args]


# The edge's commands in the form production runs (``python -m edgeclient``, no Django)
# and in the design card's form (``manage.py``), which tests of that form ask for.
EdgeForm = Literal["module", "manage"]
_EDGE_SUBCOMMANDS = {"run_edge": "run", "simulate_p1": "simulate"}


def edge_command(name: str, form: EdgeForm = "module", python: str = sys.executable) -> list[str]:
    """``run_edge`` or ``simulate_p1`` as a command line in the given form."""
    if form == "manage":
        return manage(name, python=python)
    return [python, "-m", "edgeclient", _EDGE_SUBCOMMANDS[name]]


# -- the server ------------------------------------------------------------------------


def listening_socket(port: int = 0, *, listen: bool = True) -> socket.socket:
    """A loopback socket bound before the server starts: connections made before a
    worker is up wait in the kernel's backlog, so nobody polls for the server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    if listen:
        sock.listen(LISTEN_BACKLOG)
    return sock


def database_url() -> str:
    """DATABASE_URL of the database Django uses in this process (in tests: the test
    database pytest-django created), for a server started from here."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return "sqlite:///" + str(Path(db["NAME"]).resolve())
    auth = quote(db["USER"], safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{db['NAME']}"


def server_command(
    bind: str | None,
    *,
    workers: int | None = None,
    threads: int | None = None,
    config: Path | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    graceful_timeout_s: int | None = None,
    log_level: str | None = None,
) -> list[str]:
    """gunicorn serving the project; flags given here override ``config`` (``bind``
    None: the configuration's address, e.g. GUNICORN_BIND for deploy/gunicorn.conf.py)."""
    command = [sys.executable, "-m", "gunicorn"]
    if config is not None:
        command += ["-c", str(config)]
    command.append("p1platform.wsgi:application")
    if bind is not None:
        command += ["--bind", bind]
    for flag, value in (
        ("--workers", workers),
        ("--threads", threads),
        ("--graceful-timeout", graceful_timeout_s),
        ("--log-level", log_level),
    ):
        if value is not None:
            command += [flag, str(value)]
    if certfile is not None:
        command += ["--certfile", str(certfile), "--keyfile", str(keyfile or certfile)]
    return command


@dataclass
class ServerProcess:
    url: str
    child: Child

    @property
    def process(self) -> subprocess.Popen:
        return self.child.process

    def stop(self) -> None:
        self.child.stop()


def start_server(
    sock: socket.socket,
    env: Mapping[str, str],
    *,
    name: str = "server (gunicorn)",
    log_path: Path | None = None,
    https: bool = False,
    **options: Any,
) -> ServerProcess:
    """gunicorn on ``sock`` (bound and listening), options as for ``server_command``."""
    command = server_command(f"fd://{sock.fileno()}", **options)
    # The server's output goes to the terminal (tests) or its log file (demo): nobody
    # waits for a line of it, readiness is the socket's backlog.
    read: Read = "none" if log_path is not None else "inherit"
    child = start_child(name, command, env, log_path=log_path, read=read, pass_fds=[sock.fileno()])
    port = sock.getsockname()[1]
    return ServerProcess(f"{'https' if https else 'http'}://127.0.0.1:{port}", child)


@contextlib.contextmanager
def run_server(
    *,
    workers: int | None = 1,
    threads: int | None = 4,
    sock: socket.socket | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    config: Path | None = None,
    **env: str | None,
) -> Iterator[ServerProcess]:
    """gunicorn on this process's database (``database_url()``); ``env`` overrides (None
    removes a variable).

    ``sock``: a socket the caller bound earlier (it is put in listening state here), so
    a caller can hand out the server's address before the server exists. ``certfile``
    and ``keyfile``: serve HTTPS (gunicorn's own TLS). ``config``: a gunicorn
    configuration file (``-c``), e.g. deploy/gunicorn.conf.py; the flags given here
    still override it.
    """
    if sock is None:
        sock = listening_socket()
    else:
        sock.listen(LISTEN_BACKLOG)
    changes: dict[str, str | None] = {"DATABASE_URL": database_url(), **env}
    server = start_server(
        sock,
        child_env(**changes),
        https=certfile is not None,
        workers=workers,
        threads=threads,
        config=config,
        certfile=certfile,
        keyfile=keyfile,
        graceful_timeout_s=3,
        log_level="warning",
    )
    try:
        yield server
    finally:
        server.stop()
        sock.close()


def wait_until_serving(
    base_url: str, timeout_s: float = READY_TIMEOUT_S, path: str = "/healthz"
) -> None:
    """One request: it waits in the backlog until a worker is up."""
    try:
        response = httpx.get(base_url + path, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ChildFailed(f"the server did not answer at {base_url}: {exc}") from exc
    if response.status_code != 200:
        raise ChildFailed(f"the server answered {path} with HTTP {response.status_code}")


# -- the simulated meter ---------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorSettings:
    """What simulate_p1 says about itself in its settings line."""

    address: str
    api: str
    serial: str
    profile: str
    token: str | None = None
    ca_file: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def meter_env(self, api: str | None = None) -> dict[str, str]:
        """The edge's HW_P1_* settings for this meter: v2 (TLS verified against the
        simulator's CA) when it serves v2, else v1 over plain HTTP."""
        api = api or ("v2" if self.env else "v1")
        if api == "v2":
            return {**self.env, "HW_P1_API": "v2"}
        return {"HW_P1_HOST": self.address, "HW_P1_API": "v1"}


def parse_simulator_line(line: str) -> SimulatorSettings | None:
    """The settings of the simulator's machine-readable line; None for any other line."""
    if not line.startswith(SIMULATOR_PREFIX):
        return None
    fields = json.loads(line[len(SIMULATOR_PREFIX) :])
    return SimulatorSettings(
        address=fields["address"],
        api=fields["api"],
        serial=fields["serial"],
        profile=fields["profile"],
        token=fields.get("token"),
        ca_file=fields.get("ca_file"),
        env=dict(fields.get("env") or {}),
    )


@dataclass
class SimulatorProcess:
    """A running simulate_p1 and the settings it printed."""

    child: Child
    settings: SimulatorSettings
    served_log: Path | None = None

    @property
    def process(self) -> subprocess.Popen:
        return self.child.process

    @property
    def address(self) -> str:
        return self.settings.address

    def meter_env(self, api: str | None = None) -> dict[str, str]:
        return self.settings.meter_env(api)

    def control(self, path: str, body: dict[str, Any]) -> None:
        """POST to the simulator's own switches (/_sim/offline, ...)."""
        response = httpx.post(
            f"http://{self.address}/_sim/{path}", json=body, timeout=HTTP_TIMEOUT_S
        )
        response.raise_for_status()

    def go_offline(self, seconds: float) -> None:
        """The meter drops off the network and comes back after ``seconds``."""
        self.control("offline", {"seconds": seconds})

    def logged(self) -> list[str]:
        """The ts of every measurement answer served (--log), one per answer, in order."""
        if self.served_log is None or not self.served_log.exists():
            return []
        return self.served_log.read_text().splitlines()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM: the simulator finishes logging answers in flight, then exits."""
        return self.child.stop(timeout_s)


def start_simulator(
    *args: str,
    api: str = "v1",
    env: Mapping[str, str] | None = None,
    served_log: Path | None = None,
    cert_dir: Path | None = None,
    log_path: Path | None = None,
    stamped: bool = False,
    python: str = sys.executable,
    defaults: Mapping[str, str] = EDGE_BASE_ENV,
    name: str = "meter (simulate_p1)",
    timeout_s: float = READY_TIMEOUT_S,
    form: EdgeForm = "module",
) -> SimulatorProcess:
    """simulate_p1 on a free port (unless ``args`` give --port), ready once it printed
    its settings line. ``args``: further simulate_p1 options; ``env`` (this process's
    environment by default) then ``defaults`` are its environment; ``python``: the
    interpreter (another virtualenv's, e.g. an edge-only install)."""
    command = [*edge_command("simulate_p1", form, python), "--api", api]
    if "--port" not in args:
        command += ["--port", "0"]
    if served_log is not None:
        command += ["--log", str(served_log)]
    if cert_dir is not None:
        command += ["--cert-dir", str(cert_dir)]
    command += list(args)
    child = start_child(
        name, command, dict(os.environ if env is None else env) | dict(defaults),
        log_path=log_path, stamped=stamped,
    )  # fmt: skip
    try:
        line = child.wait_for_line("^" + re.escape(SIMULATOR_PREFIX), timeout_s)
    except ChildFailed:
        child.stop()
        raise
    settings = parse_simulator_line(line)
    assert settings is not None  # the line matched the prefix
    return SimulatorProcess(child, settings, served_log)


# -- the edge --------------------------------------------------------------------------


EDGE_STARTED = "run_edge started"


def start_edge(
    env: Mapping[str, str | None],
    *,
    base: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    stamped: bool = False,
    read: Read = "stderr",
    python: str = sys.executable,
    defaults: Mapping[str, str] = EDGE_BASE_ENV,
    name: str = "edge (run_edge)",
    form: EdgeForm = "module",
) -> Child:
    """run_edge with ``base`` (this process's environment by default), then
    ``defaults``, then ``env`` (None there removes a variable). Its log lines go to stderr, which
    the harness reads; ``child.wait_for_line(EDGE_STARTED)`` waits for it to be up."""
    full = child_env(dict(os.environ if base is None else base) | dict(defaults), **env)
    return start_child(
        name,
        edge_command("run_edge", form, python),
        full,
        log_path=log_path,
        stamped=stamped,
        read=read,
    )


WORKER_STARTED = "ingest-steps worker: a cycle every"
WORKER_CYCLE = "cycle: "


def start_steps_worker(
    interval_s: float = 1.0,
    *,
    chunk: int | None = None,
    log_path: Path | None = None,
    name: str = "ingest-steps worker",
    **env: str | None,
) -> Child:
    """manage.py run_ingest_steps on this process's database (``database_url()``), one
    cycle every ``interval_s``; returns once it is up. Each cycle logs a line starting
    with WORKER_CYCLE; ``env`` overrides (None removes a variable)."""
    changes: dict[str, str | None] = {
        "DATABASE_URL": database_url(),
        "INGEST_STEPS_WORKER": "on",
        "LOG_LEVEL": "info",
        **env,
    }
    command = [sys.executable, "manage.py", "run_ingest_steps", "--interval", f"{interval_s:g}"]
    if chunk is not None:
        command += ["--chunk", str(chunk)]
    child = start_child(name, command, child_env(**changes), log_path=log_path)
    child.wait_for_line(WORKER_STARTED)
    return child
