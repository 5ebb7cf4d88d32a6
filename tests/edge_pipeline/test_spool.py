"""The spool: durable, keyed by ts, time-ordered, deletes only what was acknowledged."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest

from edgeclient.spool import SCHEMA_VERSION, Spool, SpoolError, ts_key
from p1common.processes import ROOT
from tests.samples import BASE_TS, sample, series

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


def test_a_spool_of_the_first_schema_is_migrated_keeping_its_rows(tmp_path):
    from edgeclient.spool import MIGRATIONS

    path = tmp_path / "spool.sqlite3"
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:  # as an edge of the previous release left it
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO quarantine (ts, sample, reason, source, quarantined_at) "
        "VALUES (NULL, '{}', 'edge: power_w: must be a number', 'edge', 1750000000.0)"
    )
    db.execute(
        "INSERT INTO pending VALUES (?, ?, 1750000000.0)",
        (ts_key(BASE_TS.isoformat()), json.dumps(sample(BASE_TS))),
    )
    db.execute("UPDATE state SET last_upload_count = 7")
    db.commit()
    db.close()
    with Spool(path) as spool:
        assert spool.schema_version == SCHEMA_VERSION > 1
        assert [p.sample for p in spool.oldest(10)] == [sample(BASE_TS)]
        (kept,) = spool.quarantined()
        assert (kept["reason"], kept["repeats"], kept["last_seen_at"]) == (
            "edge: power_w: must be a number",
            0,
            1750000000.0,
        )
        status = spool.status()
        assert (status.last_upload_count, status.quarantine_dropped, status.meter_changes) == (
            7,
            0,
            0,
        )


def test_dropped_values_are_counted_per_field_only_for_new_samples(tmp_path):
    clock = Clock()
    with Spool(tmp_path / "spool.sqlite3", clock=clock) as spool:
        first = sample(BASE_TS, gas_ts=None, gas_m3=None)
        dropped = {"gas_ts": "placeholder", "gas_m3": "placeholder"}
        assert spool.add(first, dropped=dropped) is True
        assert spool.add(first, dropped=dropped) is False  # the same telegram: not again
        clock.now += 2
        later = sample(BASE_TS + timedelta(seconds=2), gas_ts=None, voltage_l1_v=None)
        assert spool.add(later, dropped={"gas_ts": "placeholder", "voltage_l1_v": "not_finite"})
        rows = spool.status().dropped_values
    assert [(r.field, r.problem, r.count) for r in rows] == [
        ("gas_m3", "placeholder", 1),
        ("gas_ts", "placeholder", 2),
        ("voltage_l1_v", "not_finite", 1),
    ]
    gas_ts = rows[1]
    assert (gas_ts.first_at, gas_ts.last_at) == (clock.now - 2, clock.now)


def test_a_refusal_with_a_known_cause_bumps_the_row_instead_of_copying_it(tmp_path):
    clock = Clock()
    with Spool(tmp_path / "spool.sqlite3", clock=clock) as spool:
        for power in range(3):  # the message text differs, the cause does not
            spool.quarantine_reading(
                {"active_power_w": f"bad{power}"},
                f"edge: power_w: must be a number, got 'bad{power}'",
                cause="power_w:not_a_number",
            )
            clock.now += 2
        spool.quarantine_reading({}, "edge: power_w: is missing", cause="power_w:missing")
        spool.quarantine_reading({"x": 1}, "no cause given")
        spool.quarantine_reading({"x": 1}, "no cause given")
        rows = spool.quarantined()
        status = spool.status()
    by_cause = {row["cause"]: row for row in rows if row["cause"]}
    first = by_cause["power_w:not_a_number"]
    assert (first["repeats"], first["at"], first["last_seen_at"]) == (
        2,
        1_750_000_000.0,
        1_750_000_004.0,
    )
    assert json.loads(first["sample"]) == {"active_power_w": "bad0"}  # the first one kept
    assert by_cause["power_w:missing"]["repeats"] == 0
    assert len(rows) == 4  # two causes, and two rows without a cause
    assert (status.quarantined, status.quarantine_repeats) == (4, 2)


def test_the_quarantine_is_bounded_by_count_dropping_the_least_recently_seen(tmp_path):
    from edgeclient.spool import QUARANTINE_MAX_ROWS

    clock = Clock()
    extra = 25
    samples = series(QUARANTINE_MAX_ROWS + extra)
    with Spool(tmp_path / "spool.sqlite3", clock=clock) as spool:
        spool.add_many(samples)
        pending = spool.oldest(len(samples))
        spool.quarantine([(p.key, p.sample, "ts: too old") for p in pending[:extra]])
        clock.now += 1
        spool.quarantine([(p.key, p.sample, "ts: too old") for p in pending[extra:]])
        status = spool.status()
        kept_ts = {row["ts"] for row in spool.quarantined(limit=QUARANTINE_MAX_ROWS + extra)}
    assert status.quarantined == QUARANTINE_MAX_ROWS
    assert (status.quarantine_dropped, status.quarantine_dropped_at) == (extra, clock.now)
    assert kept_ts == {s["ts"] for s in samples[extra:]}  # the oldest went first
    assert status.depth == 0


def test_the_quarantine_is_bounded_by_age(tmp_path):
    from edgeclient.spool import QUARANTINE_MAX_AGE_S

    clock = Clock()
    with Spool(tmp_path / "spool.sqlite3", clock=clock) as spool:
        spool.quarantine_reading({"a": 1}, "old", cause="power_w:missing")
        spool.quarantine_reading({"b": 2}, "recurring", cause="power_w:not_finite")
        clock.now += QUARANTINE_MAX_AGE_S - 10
        spool.quarantine_reading({"b": 3}, "recurring", cause="power_w:not_finite")  # seen again
        clock.now += 20
        spool.quarantine_reading({"c": 4}, "new", cause="energy_import_kwh:went_backwards")
        causes = sorted(row["cause"] for row in spool.quarantined())
        status = spool.status()
    assert causes == ["energy_import_kwh:went_backwards", "power_w:not_finite"]
    assert status.quarantine_dropped == 1


def test_meter_identity_clock_and_latest_sample_are_kept_in_the_state(tmp_path):
    clock = Clock()
    with Spool(tmp_path / "spool.sqlite3", clock=clock) as spool:
        assert (spool.meter_identity(), spool.latest()) == (None, None)
        spool.add_many(series(3))
        assert spool.latest().sample == series(3)[-1]
        spool.record_meter_identity("AAAA", changed=False)
        clock.now += 60
        spool.record_meter_identity("BBBB", changed=True)
        spool.record_meter_clock("stuck", "the meter's clock stands still")
        status = spool.status()
        assert spool.meter_identity() == "BBBB"
    assert (status.meter_unique_id, status.previous_meter_unique_id) == ("BBBB", "AAAA")
    assert (status.meter_changes, status.meter_changed_at) == (1, clock.now)
    assert (status.meter_clock, status.meter_clock_since) == ("stuck", clock.now)
    assert status.meter_clock_detail == "the meter's clock stands still"


def test_the_latest_sample_outlives_its_upload_and_never_moves_back(tmp_path):
    with Spool(tmp_path / "spool.sqlite3", clock=Clock()) as spool:
        samples = series(4)
        spool.add_many(samples)
        keys = spool.pending_keys()
        spool.acknowledge(keys[2:])  # the newest two reach the server first
        spool.acknowledge(keys[:2])  # then the older two: the mark stays on the newest
        assert spool.depth() == 0
        assert spool.latest() == (keys[-1], samples[-1])
    with Spool(tmp_path / "spool.sqlite3") as reopened:  # after a restart
        assert reopened.latest().sample == samples[-1]
