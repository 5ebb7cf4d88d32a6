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
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    (
        # An edge-refused poll carries its cause (field:problem): a poll refused for a
        # cause already recorded bumps repeats and last_seen_at on that row instead of
        # adding another copy. last_seen_at is what the age bound looks at.
        "ALTER TABLE quarantine ADD COLUMN cause TEXT",
        "ALTER TABLE quarantine ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE quarantine ADD COLUMN last_seen_at REAL NOT NULL DEFAULT 0",
        "UPDATE quarantine SET last_seen_at = quarantined_at",
        "CREATE UNIQUE INDEX quarantine_cause ON quarantine (cause) WHERE cause IS NOT NULL",
        # Counting rows and finding the oldest read this small index, not the payloads.
        "CREATE INDEX quarantine_last_seen ON quarantine (last_seen_at, id)",
        # Optional values the normaliser dropped from spooled samples, per field and why.
        """CREATE TABLE dropped_value (
            field TEXT NOT NULL,
            problem TEXT NOT NULL,
            count INTEGER NOT NULL,
            first_at REAL NOT NULL,
            last_at REAL NOT NULL,
            PRIMARY KEY (field, problem)
        ) WITHOUT ROWID""",
        "ALTER TABLE state ADD COLUMN quarantine_dropped INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE state ADD COLUMN quarantine_dropped_at REAL",
        "ALTER TABLE state ADD COLUMN meter_unique_id TEXT",
        "ALTER TABLE state ADD COLUMN previous_meter_unique_id TEXT",
        "ALTER TABLE state ADD COLUMN meter_changed_at REAL",
        "ALTER TABLE state ADD COLUMN meter_changes INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE state ADD COLUMN meter_clock TEXT",
        "ALTER TABLE state ADD COLUMN meter_clock_detail TEXT",
        "ALTER TABLE state ADD COLUMN meter_clock_since REAL",
    ),
    (
        # The latest sample the server acknowledged: once the spool is drained, the
        # sample clock still knows after a restart which ts the next sample must follow
        # (a sample older than stored ones would look like a register step to the server).
        "ALTER TABLE state ADD COLUMN acknowledged_ts_us INTEGER",
        "ALTER TABLE state ADD COLUMN acknowledged_sample TEXT",
    ),
    (
        # The meter's own monthly maxima from its latest telegram read (edgeclient.history):
        # kept until the server acknowledged that read; a newer read replaces an older one
        # (the meter's history holds all the older one did).
        """CREATE TABLE meter_history (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            body TEXT NOT NULL,
            read_at TEXT NOT NULL,
            sent_at REAL
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_S = 30.0
CACHE_KIB = 256
# The quarantine is for a person to look at, so it keeps what is recent and bounded:
# a row whose cause was last seen more than 30 days ago (longer than a holiday) goes,
# and beyond 10,000 rows the least recently seen go first. 10,000 rows hold two whole
# batches the server refused at the largest drain size (5000) and, at about 1 KB a row,
# stay near 10 MB on the Pi's SD card. Dropped rows are counted in the state.
QUARANTINE_MAX_ROWS = 10_000
QUARANTINE_MAX_AGE_S = 30 * 86400.0

Clock = Callable[[], float]


class SpoolError(Exception):
    """The spool file cannot be used (missing, newer schema, not a database)."""


class Pending(NamedTuple):
    key: int  # the sample's ts in microseconds: what acknowledge() takes
    sample: dict[str, Any]


@dataclass(frozen=True)
class DroppedValues:
    """How often the normaliser dropped one field for one reason from spooled samples."""

    field: str
    problem: str
    count: int
    first_at: float
    last_at: float


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
    quarantine_repeats: int = 0  # refused polls folded into an existing row
    quarantine_dropped: int = 0  # rows removed by the count and age bounds
    quarantine_dropped_at: float | None = None
    dropped_values: tuple[DroppedValues, ...] = ()
    meter_unique_id: str | None = None
    previous_meter_unique_id: str | None = None
    meter_changed_at: float | None = None
    meter_changes: int = 0
    meter_clock: str | None = None  # a sampletime.ClockState value
    meter_clock_detail: str | None = None
    meter_clock_since: float | None = None


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
    def add(self, sample: dict[str, Any], *, dropped: Mapping[str, str] | None = None) -> bool:
        """Spool one sample durably; False when a sample with its ts is already here.

        ``dropped`` ({field: problem}) counts the optional values the normaliser left out
        of this sample, in the same commit, and only when the sample is new.
        """
        now = self._clock()
        row = (ts_key(sample["ts"]), _dumps(sample), now)
        if not dropped:  # the usual case stays one statement, one commit
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO pending (ts_us, sample, spooled_at) VALUES (?, ?, ?)", row
            )
            return cursor.rowcount == 1
        with self._transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO pending (ts_us, sample, spooled_at) VALUES (?, ?, ?)", row
            )
            if cursor.rowcount != 1:
                return False
            self._db.executemany(
                "INSERT INTO dropped_value (field, problem, count, first_at, last_at) "
                "VALUES (?, ?, 1, ?, ?) ON CONFLICT (field, problem) "
                "DO UPDATE SET count = count + 1, last_at = excluded.last_at",
                [(name, str(problem), now, now) for name, problem in dropped.items()],
            )
            return True

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
            if keys:
                newest = self._db.execute(
                    "SELECT ts_us, sample FROM pending WHERE ts_us = ?", (max(keys),)
                ).fetchone()
                if newest is not None:
                    self._db.execute(
                        "UPDATE state SET acknowledged_ts_us = ?, acknowledged_sample = ? "
                        "WHERE id = 1 AND coalesce(acknowledged_ts_us, ?) <= ?",
                        (*newest, newest[0], newest[0]),
                    )
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

    def latest(self) -> Pending | None:
        """The latest sample this spool held, pending or already acknowledged (the
        poller's memory after a restart); None for a spool that never held one."""
        with self._transaction(read_only=True):
            pending = self._db.execute(
                "SELECT ts_us, sample FROM pending ORDER BY ts_us DESC LIMIT 1"
            ).fetchone()
            acknowledged = self._db.execute(
                "SELECT acknowledged_ts_us, acknowledged_sample FROM state WHERE id = 1"
            ).fetchone()
        rows = [row for row in (pending, acknowledged) if row is not None and row[0] is not None]
        if not rows:
            return None
        key, text = max(rows, key=lambda row: row[0])
        return Pending(key, json.loads(text))

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
            self._bound_quarantine(now)
        return len(rejected)

    def quarantine_reading(self, payload: Any, reason: str, *, cause: str | None = None) -> None:
        """Keep a meter answer the edge itself could not turn into a sample.

        ``cause`` (e.g. ``"power_w:not_a_number"``) names the kind of refusal: when a row
        with that cause is already kept, it gets repeats + 1 and a new last_seen_at
        instead of a second copy.
        """
        text = json.dumps(payload, default=repr)  # NaN and odd types kept as the meter sent
        now = self._clock()
        with self._transaction():
            self._insert_quarantine(None, text, reason, "edge", now, cause)
            self._bound_quarantine(now)

    def _insert_quarantine(
        self,
        ts: str | None,
        text: str,
        reason: str,
        source: str,
        at: float,
        cause: str | None = None,
    ) -> None:
        self._db.execute(
            "INSERT INTO quarantine "
            "(ts, sample, reason, source, quarantined_at, cause, last_seen_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (cause) WHERE cause IS NOT NULL "
            "DO UPDATE SET repeats = repeats + 1, last_seen_at = excluded.last_seen_at",
            (ts, text, reason, source, at, cause, at),
        )

    def _bound_quarantine(self, now: float) -> int:
        """Drop rows last seen too long ago, then the least recently seen beyond the count
        bound; returns how many went (also added to the state's counter)."""
        aged = self._db.execute(
            "DELETE FROM quarantine WHERE last_seen_at < ?", (now - QUARANTINE_MAX_AGE_S,)
        ).rowcount
        (rows,) = self._db.execute("SELECT count(*) FROM quarantine").fetchone()
        over = 0
        if rows > QUARANTINE_MAX_ROWS:
            over = self._db.execute(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine "
                "ORDER BY last_seen_at, id LIMIT ?)",
                (rows - QUARANTINE_MAX_ROWS,),
            ).rowcount
        if aged + over:
            self._db.execute(
                "UPDATE state SET quarantine_dropped = quarantine_dropped + ?, "
                "quarantine_dropped_at = ? WHERE id = 1",
                (aged + over, now),
            )
        return aged + over

    def quarantined(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT ts, sample, reason, source, quarantined_at, cause, repeats, last_seen_at "
            "FROM quarantine ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            {
                "ts": ts,
                "sample": text,
                "reason": reason,
                "source": source,
                "at": at,
                "cause": cause,
                "repeats": repeats,
                "last_seen_at": last_seen,
            }
            for ts, text, reason, source, at, cause, repeats, last_seen in rows
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

    def record_meter_identity(self, unique_id: str, *, changed: bool) -> None:
        """The meter's unique_id: first seen (``changed=False``) or a meter change."""
        if not changed:
            self._db.execute("UPDATE state SET meter_unique_id = ? WHERE id = 1", (unique_id,))
            return
        self._db.execute(
            "UPDATE state SET previous_meter_unique_id = meter_unique_id, meter_unique_id = ?, "
            "meter_changed_at = ?, meter_changes = meter_changes + 1 WHERE id = 1",
            (unique_id, self._clock()),
        )

    def put_meter_history(self, body: dict[str, Any]) -> None:
        """Spool one telegram read (a p1wire.meter_history_payload) for upload."""
        self._db.execute(
            "INSERT INTO meter_history (id, body, read_at, sent_at) VALUES (1, ?, ?, NULL) "
            "ON CONFLICT (id) DO UPDATE SET body = excluded.body, read_at = excluded.read_at, "
            "sent_at = NULL",
            (json.dumps(body, separators=(",", ":")), body["read_at"]),
        )

    def pending_meter_history(self) -> dict[str, Any] | None:
        """The read the server has not acknowledged yet; None: none."""
        row = self._db.execute("SELECT body FROM meter_history WHERE sent_at IS NULL").fetchone()
        return None if row is None else json.loads(row[0])

    def meter_history_sent(self, read_at: str) -> bool:
        """The server acknowledged the read of ``read_at``; a newer read stays pending."""
        cursor = self._db.execute(
            "UPDATE meter_history SET sent_at = ? WHERE read_at = ? AND sent_at IS NULL",
            (self._clock(), read_at),
        )
        return cursor.rowcount == 1

    def meter_identity(self) -> str | None:
        return self._db.execute("SELECT meter_unique_id FROM state").fetchone()[0]

    def record_meter_clock(self, state: str, detail: str) -> None:
        """Which clock stamps the samples now (a sampletime.ClockState) and why."""
        self._db.execute(
            "UPDATE state SET meter_clock = ?, meter_clock_detail = ?, meter_clock_since = ? "
            "WHERE id = 1",
            (state, detail, self._clock()),
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
            quarantined, repeats = self._db.execute(
                "SELECT count(*), coalesce(sum(repeats), 0) FROM quarantine"
            ).fetchone()
            state = self._db.execute(_STATE_SELECT).fetchone()
            dropped = self._db.execute(
                "SELECT field, problem, count, first_at, last_at FROM dropped_value "
                "ORDER BY field, problem"
            ).fetchall()
        return SpoolStatus(
            path=self.path,
            schema_version=version,
            depth=depth,
            oldest_ts=json.loads(oldest[0]).get("ts") if oldest else None,
            oldest_spooled_at=oldest_spooled,
            quarantined=quarantined,
            quarantine_repeats=repeats,
            dropped_values=tuple(DroppedValues(*row) for row in dropped),
            **dict(zip(_STATE_COLUMNS, state, strict=True)),
        )


_STATE_COLUMNS = (
    "last_upload_at",
    "last_upload_count",
    "last_error",
    "last_error_at",
    "upload_state",
    "consecutive_failures",
    "meter_error",
    "meter_down_since",
    "quarantine_dropped",
    "quarantine_dropped_at",
    "meter_unique_id",
    "previous_meter_unique_id",
    "meter_changed_at",
    "meter_changes",
    "meter_clock",
    "meter_clock_detail",
    "meter_clock_since",
)
# Our own column names, fixed at import: nothing from outside reaches this statement.
_STATE_SELECT = "SELECT " + ", ".join(_STATE_COLUMNS) + " FROM state WHERE id = 1"  # noqa: S608


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
