"""The edge's spool: samples wait here, on disk, until the server acknowledged them.

Standard library sqlite3 in a file of its own (not Django's database). WAL lets the
poll loop, the upload loop and ``edge_status`` use the file at once; synchronous=FULL
makes every commit durable before the call returns, so a sample is on disk before any
upload of it can start, and a kill or power cut at any instant loses no spooled sample.

Each thread or process opens its own ``Spool``: a sqlite3 connection is not shared.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

# Each step takes the schema from version i to i + 1; append, never edit a shipped step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # ts_us: the sample's ts in microseconds since the epoch. As the key it makes a
        # re-polled telegram (same ts) a no-op, and as the rowid it gives time order.
        """CREATE TABLE pending (
            ts_us INTEGER PRIMARY KEY,
            sample TEXT NOT NULL,
            spooled_at REAL NOT NULL
        )""",
        """CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts TEXT,
            sample TEXT NOT NULL,
            reason TEXT NOT NULL,
            source TEXT NOT NULL,
            quarantined_at REAL NOT NULL
        )""",
        """CREATE TABLE state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            last_upload_at REAL,
            last_upload_count INTEGER,
            last_error TEXT,
            last_error_at REAL,
            upload_state TEXT NOT NULL DEFAULT 'ok',
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            meter_error TEXT,
            meter_down_since REAL
        )""",
        "INSERT INTO state (id) VALUES (1)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_S = 30.0
CACHE_KIB = 256

Clock = Callable[[], float]


class SpoolError(Exception):
    """The spool file cannot be used (missing, newer schema, not a database)."""


class Pending(NamedTuple):
    key: int  # the sample's ts in microseconds: what acknowledge() takes
    sample: dict[str, Any]


@dataclass(frozen=True)
class SpoolStatus:
    path: Path
    schema_version: int
    depth: int
    oldest_ts: str | None
    oldest_spooled_at: float | None
    quarantined: int
    last_upload_at: float | None
    last_upload_count: int | None
    last_error: str | None
    last_error_at: float | None
    upload_state: str
    consecutive_failures: int
    meter_error: str | None
    meter_down_since: float | None


def ts_key(ts: str) -> int:
    """Microseconds since the epoch of an ISO 8601 timestamp with an offset."""
    moment = datetime.fromisoformat(ts)
    if moment.tzinfo is None:
        raise ValueError(f"ts must carry a UTC offset: {ts!r}")
    return round(moment.timestamp() * 1_000_000)


class Spool:
    """One connection to the spool file; ``create=False`` refuses a missing file."""

    def __init__(self, path: Path | str, *, clock: Clock = time.time, create: bool = True) -> None:
        self.path = Path(path)
        self._clock = clock
        if not create and not self.path.is_file():
            raise SpoolError(f"no spool at {self.path}")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; each write below is either
            # one statement or an explicit BEGIN IMMEDIATE ... COMMIT.
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # Reads are short and mostly by key: a small page cache keeps the edge's RSS
            # low on a Pi (SQLite's default is 2 MB per connection).
            self._db.execute(f"PRAGMA cache_size = -{CACHE_KIB:d}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except (sqlite3.DatabaseError, OSError) as exc:
            raise SpoolError(f"{self.path}: {exc}") from exc
        if version > SCHEMA_VERSION:
            self._db.close()
            raise SpoolError(
                f"{self.path}: schema v{version} is newer than this edge (v{SCHEMA_VERSION})"
            )
        if create and version < SCHEMA_VERSION:
            self._migrate()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        with self._transaction():
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for step in MIGRATIONS[version:]:
                for statement in step:
                    self._db.execute(statement)
            # PRAGMA takes no parameters; the value is our own integer.
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION:d}")

    def _transaction(self, *, read_only: bool = False) -> _Transaction:
        return _Transaction(self._db, read_only)

    # -- pending samples -------------------------------------------------------------
    def add(self, sample: dict[str, Any]) -> bool:
        """Spool one sample durably; False when a sample with its ts is already here."""
        row = (ts_key(sample["ts"]), _dumps(sample), self._clock())
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO pending (ts_us, sample, spooled_at) VALUES (?, ?, ?)", row
        )
        return cursor.rowcount == 1

    def add_many(self, samples: Iterable[dict[str, Any]]) -> int:
        """Spool many samples in one durable transaction; returns how many were new."""
        now = self._clock()
        rows = [(ts_key(s["ts"]), _dumps(s), now) for s in samples]
        with self._transaction():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO pending (ts_us, sample, spooled_at) VALUES (?, ?, ?)", rows
            )
            return self._db.total_changes - before

    def oldest(self, limit: int) -> list[Pending]:
        """Up to ``limit`` pending samples, oldest ts first."""
        rows = self._db.execute(
            "SELECT ts_us, sample FROM pending ORDER BY ts_us LIMIT ?", (limit,)
        ).fetchall()
        return [Pending(key, json.loads(text)) for key, text in rows]

    def acknowledge(self, keys: Sequence[int], *, uploaded_at: float | None = None) -> int:
        """Delete exactly these pending samples (the server has them); record the upload."""
        at = self._clock() if uploaded_at is None else uploaded_at
        with self._transaction():
            before = self._db.total_changes
            self._db.executemany("DELETE FROM pending WHERE ts_us = ?", ((k,) for k in keys))
            deleted = self._db.total_changes - before
            self._db.execute(
                "UPDATE state SET last_upload_at = ?, last_upload_count = ?, "
                "upload_state = 'ok', consecutive_failures = 0 WHERE id = 1",
                (at, len(keys)),
            )
        return deleted

    def depth(self) -> int:
        return self._db.execute("SELECT count(*) FROM pending").fetchone()[0]

    def pending_keys(self) -> list[int]:
        return [k for (k,) in self._db.execute("SELECT ts_us FROM pending ORDER BY ts_us")]

    def oldest_pending_age(self, now: float | None = None) -> float | None:
        """Seconds the longest-waiting sample has been in the spool; None when empty."""
        (oldest,) = self._db.execute("SELECT min(spooled_at) FROM pending").fetchone()
        if oldest is None:
            return None
        return max(0.0, (self._clock() if now is None else now) - oldest)

    # -- quarantine ------------------------------------------------------------------
    def quarantine(self, rejected: Sequence[tuple[int, dict[str, Any], str]]) -> int:
        """Move pending samples the server refused, with its reason, out of the way.

        ``rejected`` holds (key, sample, reason). Kept, counted and reported; never sent
        again (the server said it will never accept them as they are).
        """
        now = self._clock()
        with self._transaction():
            for key, sample, reason in rejected:
                deleted = self._db.execute("DELETE FROM pending WHERE ts_us = ?", (key,))
                if deleted.rowcount:
                    self._insert_quarantine(sample.get("ts"), _dumps(sample), reason, "server", now)
        return len(rejected)

    def quarantine_reading(self, payload: Any, reason: str) -> None:
        """Keep a meter answer the edge itself could not turn into a sample."""
        text = json.dumps(payload, default=repr)  # NaN and odd types kept as the meter sent
        self._insert_quarantine(None, text, reason, "edge", self._clock())

    def _insert_quarantine(
        self, ts: str | None, text: str, reason: str, source: str, at: float
    ) -> None:
        self._db.execute(
            "INSERT INTO quarantine (ts, sample, reason, source, quarantined_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (ts, text, reason, source, at),
        )

    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT ts, sample, reason, source, quarantined_at FROM quarantine "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            {"ts": ts, "sample": text, "reason": reason, "source": source, "at": at}
            for ts, text, reason, source, at in rows
        ]

    # -- state -----------------------------------------------------------------------
    def record_upload_failure(self, state: str, error: str) -> int:
        """Remember a failed upload; returns the consecutive failure count."""
        with self._transaction():
            self._db.execute(
                "UPDATE state SET last_error = ?, last_error_at = ?, upload_state = ?, "
                "consecutive_failures = consecutive_failures + 1 WHERE id = 1",
                (error, self._clock(), state),
            )
            return self._db.execute("SELECT consecutive_failures FROM state").fetchone()[0]

    def record_meter(self, error: str | None) -> None:
        """The meter's state changed: unreachable (``error``) or back (None)."""
        now = self._clock()
        if error is None:
            self._db.execute("UPDATE state SET meter_error = NULL, meter_down_since = NULL")
        else:
            self._db.execute(
                "UPDATE state SET meter_error = ?, meter_down_since = "
                "coalesce(meter_down_since, ?)",
                (error, now),
            )

    def status(self) -> SpoolStatus:
        """One consistent snapshot (a single read transaction) for edge_status."""
        with self._transaction(read_only=True):
            version = self.schema_version
            if version < SCHEMA_VERSION:
                raise SpoolError(
                    f"{self.path}: schema v{version}, this edge needs v{SCHEMA_VERSION} "
                    "(start run_edge once to migrate)"
                )
            depth, oldest_spooled = self._db.execute(
                "SELECT count(*), min(spooled_at) FROM pending"
            ).fetchone()
            oldest = self._db.execute(
                "SELECT sample FROM pending ORDER BY ts_us LIMIT 1"
            ).fetchone()
            (quarantined,) = self._db.execute("SELECT count(*) FROM quarantine").fetchone()
            state = self._db.execute(
                "SELECT last_upload_at, last_upload_count, last_error, last_error_at, "
                "upload_state, consecutive_failures, meter_error, meter_down_since "
                "FROM state WHERE id = 1"
            ).fetchone()
        return SpoolStatus(
            self.path,
            version,
            depth,
            json.loads(oldest[0]).get("ts") if oldest else None,
            oldest_spooled,
            quarantined,
            *state,
        )


class _Transaction:
    """BEGIN IMMEDIATE (the write lock up front, so no upgrade deadlock) ... COMMIT.

    A read-only one is a plain BEGIN: one WAL snapshot for several SELECTs.
    """

    def __init__(self, db: sqlite3.Connection, read_only: bool) -> None:
        self._db = db
        self.read_only = read_only

    def __enter__(self) -> None:
        self._db.execute("BEGIN" if self.read_only else "BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _dumps(sample: dict[str, Any]) -> str:
    # allow_nan=False: the server refuses NaN, so it must never reach the spool as JSON.
    return json.dumps(sample, separators=(",", ":"), allow_nan=False)
