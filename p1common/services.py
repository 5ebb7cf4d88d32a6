"""Private PostgreSQL and Redis servers for a test or a script that must stop them.

The shared servers on 5432 and 6379 serve every helper and every test run; an outage
test starts its own here instead. Each server keeps one loopback port for its whole life,
so a client that reconnects after stop() and start() finds it at the same address.
Readiness is awaited (pg_isready, Redis's "Ready" line), never slept for. Both run as
children of the process harness (p1common.processes): a session of their own, stopped
with their parent.

    with PrivatePostgres() as pg, PrivateRedis() as redis:
        url = pg.create_database("p1")
        pg.restart()
        redis.stop(); ...; redis.start()

    with PrivatePostgres() as primary, PrivateReplica(primary) as replica:
        replica.wait_for_replay()      # the primary's writes so far are readable there
        replica.pause_replay(); ...; replica.resume_replay()
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from p1common.processes import Child, ChildFailed, start_child


def _newest_pg_bin(base: Path = Path("/usr/lib/postgresql")) -> Path:
    """Debian's binaries of the newest installed PostgreSQL (15 on the reference box)."""
    versions = [p for p in base.glob("*/bin") if (p / "postgres").exists()] if base.is_dir() else []
    if not versions:
        return base / "15" / "bin"
    return max(versions, key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()])


PG_BIN = _newest_pg_bin()
PG_USER = "postgres"  # the OS user the cluster runs as when we are root
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 60.0
READY_POLL_S = 0.05


class ServiceMissing(RuntimeError):
    """The server's binary is not installed (tests skip, naming it)."""


class ServiceFailed(RuntimeError):
    """The server did not start or stop in time; the message ends with its log."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stop(child: Child | None, signum: int, log: Path) -> None:
    if child is not None and child.stop(STOP_TIMEOUT_S, signum):
        raise ServiceFailed(f"pid {child.pid} ignored signal {signum}:\n{_tail(log)}") from None


class _Service:
    """Start/stop/restart bookkeeping shared by both servers."""

    name = "service"

    def __init__(self, root: Path | None, port: int | None = None) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix=f"p1-{self.name}-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log_path = self.root / f"{self.name}.log"
        self.child: Child | None = None

    @property
    def process(self) -> subprocess.Popen | None:
        return self.child.process if self.child is not None else None

    @property
    def running(self) -> bool:
        return self.child is not None and self.child.running()

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its files (when the directory was ours)."""
        try:
            self.stop()
        finally:
            if self._own_root:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PrivatePostgres(_Service):
    """A PostgreSQL cluster of our own: trust auth, 127.0.0.1 and a socket in its folder.

    ``durable``: fsync and full-page writes on, as in production (a benchmark of commit
    costs); off by default, since tests stop the server cleanly but never crash the
    machine. ``settings``: further server settings (``-c name=value``). The default
    wal_level (replica) already lets a PrivateReplica stream from it.
    """

    name = "postgres"

    def __init__(
        self,
        root: Path | None = None,
        bin_dir: Path = PG_BIN,
        *,
        port: int | None = None,
        durable: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        if not (bin_dir / "postgres").exists():
            raise ServiceMissing(f"PostgreSQL server binaries not found in {bin_dir}")
        super().__init__(root, port)
        self.bin_dir = bin_dir
        self.durable = durable
        self.settings = dict(settings or {})
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sockets"
        # initdb and postgres refuse to run as root; as root we run them as `postgres`.
        self._user = pwd.getpwnam(PG_USER) if os.getuid() == 0 else None
        self.socket_dir.mkdir(exist_ok=True)
        if self._user is not None:
            for path in (self.root, self.socket_dir):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, **kwargs: Any) -> dict[str, Any]:
        """Popen keyword arguments, plus the switch to the cluster's owner when root."""
        if self._user is None:
            return kwargs
        return kwargs | {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        command = [
            str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
            "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        ]  # fmt: skip
        result = subprocess.run(
            command,
            **self._as_owner(cwd=self.root, capture_output=True, text=True),
            timeout=COMMAND_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise ServiceFailed(f"initdb failed:\n{result.stdout}{result.stderr}")

    def _create_cluster(self) -> None:
        self._initdb()

    def start(self) -> None:
        if self.running:
            return
        if not (self.data_dir / "PG_VERSION").exists():
            self._create_cluster()
        command = [
            str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.socket_dir}",
        ]  # fmt: skip
        if not self.durable:
            command += ["-c", "fsync=off", "-c", "full_page_writes=off"]
        for name, value in self.settings.items():
            command += ["-c", f"{name}={value}"]
        self.child = start_child(
            self.name,
            command,
            os.environ,
            log_path=self.log_path,
            read="none",
            **self._as_owner(cwd=self.root),
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        probe = [
            str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
            "-U", "postgres", "-d", "postgres", "-t", "1",
        ]  # fmt: skip
        while subprocess.run(probe, timeout=COMMAND_TIMEOUT_S).returncode != 0:
            if self.child is None or not self.child.running():
                raise ServiceFailed(f"postgres exited at start:\n{_tail(self.log_path)}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServiceFailed(f"postgres not ready in {START_TIMEOUT_S} s")
            time.sleep(READY_POLL_S)

    def stop(self) -> None:
        """Fast shutdown: open sessions are cut, committed data stays."""
        _stop(self.child, signal.SIGINT, self.log_path)

    def create_database(self, name: str) -> str:
        """Create ``name`` (dropping an old one) and return its URL."""
        for args in (["dropdb", "--if-exists"], ["createdb"]):
            command = [
                str(self.bin_dir / args[0]), *args[1:], "-h", "127.0.0.1", "-p", str(self.port),
                "-U", "postgres", name,
            ]  # fmt: skip
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
            )
            if result.returncode != 0:
                raise ServiceFailed(f"{args[0]} {name} failed: {result.stderr.strip()}")
        return self.url(name)

    def query(self, sql: str, database: str = "postgres") -> str:
        """One statement through psql; its result as text (columns split by |)."""
        command = [
            str(self.bin_dir / "psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        if result.returncode != 0:
            raise ServiceFailed(f"{self.name}: {sql!r} failed: {result.stderr.strip()}")
        return result.stdout.strip()

    def current_lsn(self) -> str:
        """Where the primary's WAL ends now: a replica that replayed up to here has every
        transaction committed so far."""
        return self.query("SELECT pg_current_wal_lsn()")


class PrivateReplica(PrivatePostgres):
    """A hot standby of ``primary``, streaming from it: made with ``pg_basebackup -R``
    (a copy of the primary's cluster plus standby.signal and primary_conninfo), on a
    port of its own, read-only. The primary must be running when it is first started.
    """

    name = "replica"

    def __init__(
        self, primary: PrivatePostgres, root: Path | None = None, *, port: int | None = None
    ) -> None:
        if not (primary.bin_dir / "pg_basebackup").exists():
            raise ServiceMissing(f"pg_basebackup not found in {primary.bin_dir}")
        super().__init__(
            root, primary.bin_dir, port=port, durable=primary.durable, settings=primary.settings
        )
        self.primary = primary

    def _create_cluster(self) -> None:
        command = [
            str(self.bin_dir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary.port),
            "-U", "postgres", "-D", str(self.data_dir), "--write-recovery-conf",
            "--wal-method=stream", "--checkpoint=fast", "--no-sync",
        ]  # fmt: skip
        result = subprocess.run(
            command,
            **self._as_owner(cwd=self.root, capture_output=True, text=True),
            timeout=COMMAND_TIMEOUT_S,
        )
        if result.returncode != 0:
            raise ServiceFailed(f"pg_basebackup failed:\n{result.stdout}{result.stderr}")

    def create_database(self, name: str) -> str:
        raise ServiceFailed("a replica is read-only: create the database on the primary")

    def replayed(self, lsn: str) -> bool:
        return self.query(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn") == "t"

    def wait_for_replay(self, lsn: str | None = None, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the replica has replayed the primary's WAL up to ``lsn`` (default: all
        of it now), so whatever the primary committed so far is readable here."""
        target = lsn or self.primary.current_lsn()
        self._await(lambda: self.replayed(target), f"replay up to {target}", timeout_s)

    def pause_replay(self) -> None:
        """Stop applying WAL (it is still received): the replica's rows stand still."""
        self.query("SELECT pg_wal_replay_pause()")
        self._await(
            lambda: self.query("SELECT pg_get_wal_replay_pause_state()") == "paused",
            "replay paused",
        )

    def resume_replay(self) -> None:
        self.query("SELECT pg_wal_replay_resume()")

    def _await(
        self, done: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                log = _tail(self.log_path)
                raise ServiceFailed(f"replica: no {what} in {timeout_s:g} s:\n{log}")
            time.sleep(READY_POLL_S)


class PrivateRedis(_Service):
    """A Redis server of our own, without persistence, on one port for its whole life."""

    name = "redis"

    def __init__(self, root: Path | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceMissing("redis-server is not installed")
        super().__init__(root)
        self.binary = binary

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        if self.running:
            return
        command = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.root),
        ]  # fmt: skip
        self.child = start_child(self.name, command, os.environ, log_path=self.log_path)
        try:
            # The line Redis prints once it accepts connections (or its exit).
            self.child.wait_for_line("Ready to accept connections", START_TIMEOUT_S)
        except ChildFailed as exc:
            self.stop()
            raise ServiceFailed(f"redis-server did not become ready: {exc}") from exc

    def stop(self) -> None:
        _stop(self.child, signal.SIGTERM, self.log_path)
