"""The run's witness: it looks at the database and the spool from the outside, twice a
second, to learn when each sample was committed to the spool and when it reached the
database (the longest wait in the spool), and what the database holds at the end."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from scripts.chaos.accounting import utc_iso

OBSERVE_EVERY_S = 0.5
DB_CONNECT_TIMEOUT_S = 2


def ts_from_key(ts_us: int) -> str:
    return utc_iso(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ts_us))


class Observer:
    """Looks at the database and the spool twice a second, from the outside.

    Records when each sample first appeared in the database, and the spool's commit
    time of every sample it saw pending and when it saw it gone. Either side may be
    down or locked for a look (PostgreSQL restarting, the edge writing): that look is
    skipped.
    """

    def __init__(self, db_url: str, device_id: str, spool_path: Path) -> None:
        self.db_url = db_url
        self.device_id = device_id
        self.spool_path = spool_path
        self.first_stored: dict[str, float] = {}
        self.spooled_at: dict[str, float] = {}
        self.left_spool: dict[str, float] = {}
        self._pending: set[str] = set()
        self.stored: list[str] = []
        self.depth: int | None = None
        self.spool_looks = 0  # successful looks at the spool so far
        self._conn: psycopg.Connection | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="observer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(OBSERVE_EVERY_S):
            self.look()

    def look(self) -> bool:
        """One look at both; False when the database could not be read this time."""
        with self._lock:
            self._look_at_spool()
            return self._look_at_database()

    def _look_at_spool(self) -> None:
        if not self.spool_path.exists():
            return
        try:
            db = sqlite3.connect(f"file:{self.spool_path}?mode=ro", uri=True, timeout=1)
            try:
                rows = db.execute("SELECT ts_us, spooled_at FROM pending").fetchall()
            finally:
                db.close()
        except sqlite3.Error:
            return
        now = time.time()
        self.depth = len(rows)
        self.spool_looks += 1
        pending = set()
        for ts_us, spooled_at in rows:
            ts = ts_from_key(ts_us)
            pending.add(ts)
            self.spooled_at.setdefault(ts, spooled_at)
        for ts in self._pending - pending:
            self.left_spool[ts] = now  # the latest departure: a re-polled ts may return
        self._pending = pending

    def _look_at_database(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self.db_url, connect_timeout=DB_CONNECT_TIMEOUT_S, autocommit=True
                )
            rows = self._conn.execute(
                "SELECT s.ts FROM telemetry_sample s JOIN telemetry_device d "
                "ON d.id = s.device_id WHERE d.device_id = %s",
                (self.device_id,),
            ).fetchall()
        except psycopg.Error:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return False
        now = time.time()
        self.stored = [utc_iso(ts) for (ts,) in rows]
        for ts in self.stored:
            self.first_stored.setdefault(ts, now)
        return True

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if predicate():
                    return True
            time.sleep(OBSERVE_EVERY_S / 2)
        return False

    def wait_for_look(self, timeout_s: float) -> bool:
        """Look until the database answers (the watcher thread must be stopped)."""
        deadline = time.monotonic() + timeout_s
        while not self.look():
            if time.monotonic() > deadline:
                return False
            time.sleep(OBSERVE_EVERY_S)
        return True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._conn is not None:
            self._conn.close()
