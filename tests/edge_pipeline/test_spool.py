"""The spool: durable, keyed by ts, time-ordered, deletes only what was acknowledged."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from edgeclient.spool import SCHEMA_VERSION, Spool, SpoolError, ts_key
from tests.samples import BASE_TS, sample, series
from tests.serverproc import ROOT

BRUSSELS = ZoneInfo("Europe/Brussels")


class Clock:
    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_re_polled_telegram_is_spooled_once(tmp_path):
    with Spool(tmp_path / "spool.sqlite3") as spool:
        first = sample(BASE_TS)
        assert spool.add(first) is True
        assert spool.add(dict(first)) is False
        # The same instant written with another offset is the same telegram.
        same_instant = {**first, "ts": BASE_TS.astimezone(BRUSSELS).isoformat()}
        assert spool.add(same_instant) is False
        assert spool.depth() == 1


def test_oldest_returns_samples_in_time_order_whatever_the_arrival_order(tmp_path):
    samples = series(6, step_s=2)
    with Spool(tmp_path / "spool.sqlite3") as spool:
        for s in (samples[3], samples[0], samples[5], samples[1], samples[4], samples[2]):
            spool.add(s)
        assert [p.sample for p in spool.oldest(4)] == samples[:4]
        assert [p.key for p in spool.oldest(10)] == [ts_key(s["ts"]) for s in samples]


def test_acknowledge_deletes_exactly_the_acknowledged_rows(tmp_path):
    clock = Clock()
    with Spool(tmp_path / "spool.sqlite3", clock=clock) as spool:
        spool.add_many(series(5))
        batch = spool.oldest(3)
        # A poll spools an older-looking and a newer sample while the batch is in flight.
        late = sample(BASE_TS + timedelta(seconds=1.5))
        spool.add(late)
        spool.add(sample(BASE_TS + timedelta(seconds=10)))
        assert spool.acknowledge([p.key for p in batch]) == 3
        left = [p.sample["ts"] for p in spool.oldest(10)]
        assert left == [late["ts"], *[s["ts"] for s in series(5)[3:]], left[-1]]
        status = spool.status()
        assert status.last_upload_at == clock.now
        assert status.last_upload_count == 3


def test_quarantine_moves_rejected_samples_with_the_reason_and_keeps_the_rest(tmp_path):
    with Spool(tmp_path / "spool.sqlite3") as spool:
        spool.add_many(series(4))
        batch = spool.oldest(4)
        spool.quarantine([(batch[1].key, batch[1].sample, "power_w: must be a number")])
        assert [p.key for p in spool.oldest(10)] == [batch[0].key, batch[2].key, batch[3].key]
        (kept,) = spool.quarantined()
        assert kept["ts"] == batch[1].sample["ts"]
        assert kept["reason"] == "power_w: must be a number"
        assert kept["source"] == "server"
        spool.quarantine_reading({"active_power_w": float("nan")}, "edge: power_w: not finite")
        assert spool.status().quarantined == 2


def test_status_reports_depth_ages_failures_and_meter_state(tmp_path):
    clock = Clock()
    with Spool(tmp_path / "spool.sqlite3", clock=clock) as spool:
        empty = spool.status()
        assert (empty.depth, empty.oldest_ts, empty.last_upload_at) == (0, None, None)
        spool.add_many(series(3))
        clock.now += 60
        spool.add(sample(BASE_TS + timedelta(hours=1)))
        assert spool.oldest_pending_age(clock.now + 5) == 65
        assert spool.record_upload_failure("unreachable", "refused") == 1
        assert spool.record_upload_failure("unreachable", "refused") == 2
        spool.record_meter("MeterTimeout: slow")
        status = spool.status()
        assert status.depth == 4
        assert status.oldest_ts == series(1)[0]["ts"]
        assert (status.upload_state, status.consecutive_failures) == ("unreachable", 2)
        assert status.meter_down_since == clock.now
        spool.record_meter(None)
        spool.acknowledge([p.key for p in spool.oldest(1)])
        status = spool.status()
        assert (status.upload_state, status.consecutive_failures) == ("ok", 0)
        assert status.meter_error is None
        assert status.last_error == "refused"  # the last error stays for the report


def test_spool_is_wal_with_full_sync_and_a_versioned_schema(tmp_path):
    path = tmp_path / "spool.sqlite3"
    Spool(path).close()  # creating it is all this step needs
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    with Spool(path) as spool:  # no second migration, data kept
        assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_a_spool_from_a_newer_edge_is_refused_not_damaged(tmp_path):
    path = tmp_path / "spool.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SpoolError, match="newer than this edge"):
        Spool(path)


def test_status_without_a_spool_file_is_an_error_not_a_new_file(tmp_path):
    with pytest.raises(SpoolError, match="no spool"):
        Spool(tmp_path / "missing.sqlite3", create=False)
    assert not (tmp_path / "missing.sqlite3").exists()


_WRITER = """
import sys
from datetime import timedelta
from zoneinfo import ZoneInfo
from edgeclient.spool import Spool
from tests.samples import BASE_TS, sample
spool = Spool(sys.argv[1])
for i in range(100000):
    spool.add(sample(BASE_TS + timedelta(seconds=i)))
    print(i, flush=True)
"""


def test_every_add_that_returned_survives_a_sigkill(tmp_path):
    path = tmp_path / "spool.sqlite3"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    confirmed = -1
    for line in writer.stdout:
        confirmed = int(line)
        if confirmed == 200:
            writer.send_signal(signal.SIGKILL)
            break
    writer.wait(10)
    # Lines already in the pipe were confirmed too: read them before checking.
    confirmed = max([confirmed, *(int(x) for x in writer.stdout.read().split())])
    with Spool(path) as spool:
        keys = spool.pending_keys()
    assert len(keys) >= confirmed + 1
    assert keys[: confirmed + 1] == [
        ts_key(sample(BASE_TS + timedelta(seconds=i))["ts"]) for i in range(confirmed + 1)
    ]
