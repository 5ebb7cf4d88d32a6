"""Sample time: the meter's clock while it agrees and moves forward, else the edge's.

Pure SampleClock rules first, then the Poller against meters that poll through the real
HomeWizardClient: a recorded answer sequence (tests/edge/recorded_meter.py) where the
simulator cannot show the fault (a clock standing still while the power changes), and
the simulator itself where it can (a meter clock off the edge's, a re-polled telegram).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeclient.homewizard import HomeWizardClient, MeterConfig
from edgeclient.poller import DUPLICATE, SPOOLED, Poller
from edgeclient.sampletime import (
    METER_CLOCK_TOLERANCE,
    METER_CLOCK_TRUST_AFTER,
    TELEGRAM_REPEAT_WINDOW,
    UNKNOWN_GAP,
    ClockState,
    SampleClock,
)
from edgeclient.spool import Spool
from tests.edge.conftest import ManualClock, load_fixture
from tests.edge.recorded_meter import recorded_meter

T0 = datetime(2024, 6, 28, 12, 0, 0, tzinfo=UTC)


def _values(power: float) -> dict:
    return {"power_w": power, "energy_import_kwh": 100.0}


def _run(clock: SampleClock, readings):
    """(meter_time or None, edge_now, power) -> the ts given out (None: same telegram)."""
    out = []
    for meter_time, edge_now, power in readings:
        stamp = clock.stamp(meter_time, edge_now, _values(power))
        clock.commit(stamp)
        out.append(stamp.ts)
    return out


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def test_an_agreeing_meter_clock_stamps_the_samples_and_a_repoll_is_one_measurement():
    clock = SampleClock()
    ts = _run(
        clock,
        [
            (T0, T0 + _s(0.4), 500),
            (T0, T0 + _s(0.9), 500),  # the same telegram polled again
            (T0 + _s(1), T0 + _s(1.3), 510),
        ],
    )
    assert ts == [T0, None, T0 + _s(1)]
    assert clock.state is ClockState.METER


def test_a_stuck_meter_clock_falls_back_to_the_edge_clock_and_loses_no_reading():
    clock = SampleClock()
    edge = [T0 + _s(2 * i) for i in range(6)]
    ts = _run(clock, [(T0, edge[i], 500 + i) for i in range(6)])
    assert ts == [T0, *edge[1:]]
    assert clock.state is ClockState.STUCK
    # Nothing changed and the meter's time did not advance: the same telegram, still.
    stamp = clock.stamp(T0, edge[5] + _s(2), _values(505))
    assert stamp.ts is None


@pytest.mark.parametrize(
    ("meter_start", "state"),
    [
        # A DSMR clock never set counts on from its factory value (dsmr-reader#811).
        (datetime(2000, 1, 1, 0, 0, 5, tzinfo=UTC), ClockState.DRIFTING),
        (T0 - _s(120), ClockState.DRIFTING),
        (T0 + METER_CLOCK_TOLERANCE + _s(1), ClockState.DRIFTING),
    ],
)
def test_an_unset_or_drifting_meter_clock_falls_back_to_the_edge_clock(meter_start, state):
    clock = SampleClock()
    readings = [(meter_start + _s(i), T0 + _s(i), 500 + i) for i in range(4)]
    assert _run(clock, readings) == [T0 + _s(i) for i in range(4)]
    assert clock.state is state


def test_a_meter_without_timestamps_gets_the_edge_clock_for_every_poll():
    clock = SampleClock()
    ts = _run(clock, [(None, T0 + _s(i), 500 + i) for i in range(3)])
    assert ts == [T0, T0 + _s(1), T0 + _s(2)]
    assert clock.state is ClockState.ABSENT
    stamp = clock.stamp(None, T0 + _s(3), _values(1), meter_time_unusable="placeholder: 0")
    assert (stamp.state, "placeholder: 0" in stamp.detail) == (ClockState.UNUSABLE, True)


def test_without_a_meter_time_an_unchanged_reading_is_the_same_telegram_within_the_window():
    # v1 firmware sends no telegram time and answers every poll with its latest telegram:
    # a DSMR 4 meter polled every 2 s repeats each telegram five times.
    clock = SampleClock()
    window = TELEGRAM_REPEAT_WINDOW.total_seconds()
    polls = [(None, T0 + _s(2 * i), 500) for i in range(int(window // 2) + 2)]
    ts = _run(clock, [*polls, (None, polls[-1][1] + _s(1), 510)])
    # One sample per telegram, and a meter at rest still gives one per window.
    assert [t for t in ts if t is not None] == [T0, T0 + _s(window), polls[-1][1] + _s(1)]


def test_a_stuck_meter_clock_at_rest_still_gives_a_sample_per_telegram_window():
    # Found in review: with the clock stuck, "same time, same values" de-duplicated a
    # household at rest for as long as nothing changed (one sample an hour).
    clock = SampleClock()
    _run(clock, [(T0, T0, 500), (T0, T0 + _s(2), 501)])  # values change: clock stuck
    assert clock.state is ClockState.STUCK
    at_rest = [(T0, T0 + _s(2 + 2 * i), 501) for i in range(1, 31)]  # a minute, unchanged
    given = [ts for ts in _run(clock, at_rest) if ts is not None]
    window = TELEGRAM_REPEAT_WINDOW.total_seconds()
    assert len(given) == int(60 // window)


def test_switching_to_the_edge_clock_never_gives_a_ts_before_the_last_one():
    clock = SampleClock()
    ahead = _s(20)  # within the tolerance: trusted, but 20 s ahead of the edge
    ts = _run(
        clock,
        [
            (T0 + ahead, T0, 500),
            (T0 + ahead + _s(2), T0 + _s(2), 510),
            (T0 + ahead + _s(2), T0 + _s(4), 520),  # stuck: the edge says T0 + 4 s
            (T0 + ahead + _s(2), T0 + _s(6), 530),
            (T0 + ahead + _s(2), T0 + _s(30), 540),
        ],
    )
    # From the last meter time on at half the edge's speed, until the edge's time is later.
    last_meter = T0 + ahead + _s(2)
    assert ts == [T0 + ahead, last_meter, last_meter + _s(1), last_meter + _s(2), T0 + _s(30)]
    assert clock.state is ClockState.STUCK


def test_the_meter_clock_is_trusted_again_only_after_it_proved_itself():
    clock = SampleClock()
    _run(clock, [(T0 - _s(120), T0, 1)])
    assert clock.state is ClockState.DRIFTING
    # 20 s behind: inside the tolerance, but not inside half of it: stays on the edge.
    near = [(T0 + _s(i) - _s(20), T0 + _s(i), i) for i in range(1, 8)]
    assert _run(clock, near) == [T0 + _s(i) for i in range(1, 8)]
    assert clock.state is ClockState.DRIFTING
    # 2 s behind: trusted at the third reading in a row; the ts then moves on at half
    # speed from the last edge time until the (lagging) meter time overtakes it.
    assert METER_CLOCK_TRUST_AFTER == 3
    good = [(T0 + _s(i) - _s(2), T0 + _s(i), i) for i in range(8, 14)]
    ts = _run(clock, good)
    assert ts == [T0 + _s(s) for s in (8, 9, 9.5, 10, 10.5, 11)]
    assert clock.state is ClockState.METER


def test_a_meter_clock_that_goes_back_falls_back_to_the_edge_clock():
    clock = SampleClock()
    ts = _run(clock, [(T0, T0, 1), (T0 - _s(5), T0 + _s(1), 2)])
    assert ts == [T0, T0 + _s(1)]
    assert clock.state is ClockState.BACKWARDS


def test_an_edge_clock_stepping_back_still_gives_increasing_ts():
    clock = SampleClock()
    ts = _run(clock, [(None, T0, 1), (None, T0 - _s(3), 2), (None, T0 - _s(1), 3)])
    # A step back: how much time passed is unknown (UNKNOWN_GAP, at half speed); then
    # the 2 s the edge's clock moved, at half speed.
    assert ts == [T0, T0 + UNKNOWN_GAP / 2, T0 + UNKNOWN_GAP / 2 + _s(1)]


_step = st.tuples(
    st.sampled_from(["advance", "same", "back", "none", "jump"]),
    st.floats(min_value=-5, max_value=10),  # how far the edge moves
    st.booleans(),  # whether the values change
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, min_size=1, max_size=40), st.floats(min_value=-60, max_value=60))
def test_any_sequence_of_meter_and_edge_clocks_gives_ts_in_strict_order(steps, skew_s):
    clock = SampleClock()
    edge, meter, power = T0, T0 + _s(skew_s), 0
    given_out = []
    for kind, edge_step, changes in steps:
        edge += _s(edge_step)
        meter = {
            "advance": meter + _s(1),
            "same": meter,
            "back": meter - _s(3),
            "none": meter,
            "jump": meter + _s(3600),
        }[kind]
        power += 1 if changes else 0
        meter_time = None if kind == "none" else meter
        stamp = clock.stamp(meter_time, edge, _values(power))
        clock.commit(stamp)
        if stamp.ts is None:
            # Only a repeat of the very same telegram is not a new sample: the same meter
            # time, or no meter time within the telegram repeat window.
            assert kind in ("same", "none") and not changes
            continue
        given_out.append(stamp.ts)
    assert given_out == sorted(set(given_out))


# -- the Poller against meters ------------------------------------------------------------


def _v2_answer(timestamp: str, power_w: int, import_kwh: float) -> dict:
    # The HomeWizard API documentation's v2 P1 example (api-documentation.homewizard.com,
    # /docs/v2/measurement), as in tests/v2/fixtures/HWE-P1 of python-homewizard-energy.
    payload = load_fixture("v2-measurement-3phase-belgian-gas.json")
    return payload | {"timestamp": timestamp, "power_w": power_w, "energy_import_kwh": import_kwh}


def _poll(poller: Poller, clock: ManualClock, count: int, step_s: float = 2.0) -> list[str]:
    states = []
    for _ in range(count):
        states.append(poller.step().state)
        clock.advance(step_s)
    return states


def _edge_now(clock: ManualClock):
    return lambda: clock.moment


def test_a_meter_whose_clock_stands_still_has_every_reading_spooled(
    tmp_path, clock, caplog, cert_root
):
    # 14:12:34 Belgian summer time is 12:12:34 UTC; the edge's clock starts there too.
    clock.set(datetime(2024, 6, 28, 12, 12, 34, 500_000, tzinfo=UTC))
    answers = [_v2_answer("2024-06-28T14:12:34", 500 + i, 13779.338 + i / 1000) for i in range(6)]
    caplog.set_level(logging.INFO, logger="edgeclient.poller")
    with (
        recorded_meter(answers, api="v2", cert_dir=cert_root / "recorded") as meter,
        Spool(tmp_path / "spool.sqlite3") as spool,
    ):
        poller = Poller(meter, spool, now=_edge_now(clock))
        assert _poll(poller, clock, 6) == [SPOOLED] * 6
        stored = [p.sample for p in spool.oldest(100)]
        status = spool.status()
    assert [s["power_w"] for s in stored] == [500.0 + i for i in range(6)]
    assert stored[0]["ts"] == "2024-06-28T12:12:34+00:00"  # the meter's time, while it held
    assert [s["ts"] for s in stored[1:]] == [
        (datetime(2024, 6, 28, 12, 12, 34, 500_000, tzinfo=UTC) + _s(2 * i)).isoformat()
        for i in range(1, 6)
    ]
    assert (status.meter_clock, "stands still" in status.meter_clock_detail) == ("stuck", True)
    said = [r.getMessage() for r in caplog.records if "stands still" in r.getMessage()]
    assert len(said) == 1, said


def test_a_telegram_polled_twice_is_spooled_once(tmp_path, clock, cert_root):
    clock.set(datetime(2024, 6, 28, 12, 12, 34, 200_000, tzinfo=UTC))
    same = _v2_answer("2024-06-28T14:12:34", 500, 13779.338)
    nxt = _v2_answer("2024-06-28T14:12:35", 505, 13779.339)
    with (
        recorded_meter([same, same, nxt], api="v2", cert_dir=cert_root / "recorded") as meter,
        Spool(tmp_path / "spool.sqlite3") as spool,
    ):
        poller = Poller(meter, spool, now=_edge_now(clock))
        assert _poll(poller, clock, 3, step_s=0.4) == [SPOOLED, DUPLICATE, SPOOLED]
        assert [p.sample["ts"] for p in spool.oldest(10)] == [
            "2024-06-28T12:12:34+00:00",
            "2024-06-28T12:12:35+00:00",
        ]
        assert spool.status().meter_clock == "meter"


def test_a_meter_clock_never_set_is_replaced_by_the_edge_clock_and_said_once(
    tmp_path, clock, caplog, cert_root
):
    clock.set(datetime(2024, 6, 28, 12, 0, 0, tzinfo=UTC))
    # An unset DSMR clock starts at 2000-01-01 00:00 and counts on (dsmr-reader#811).
    answers = [_v2_answer(f"2000-01-01T01:00:{10 + i:02d}", 500 + i, 20.0 + i) for i in range(5)]
    caplog.set_level(logging.INFO, logger="edgeclient.poller")
    with (
        recorded_meter(answers, api="v2", cert_dir=cert_root / "recorded") as meter,
        Spool(tmp_path / "spool.sqlite3") as spool,
    ):
        poller = Poller(meter, spool, now=_edge_now(clock))
        assert _poll(poller, clock, 5) == [SPOOLED] * 5
        stored = [p.sample["ts"] for p in spool.oldest(10)]
        status = spool.status()
    assert stored == [
        (datetime(2024, 6, 28, 12, tzinfo=UTC) + _s(2 * i)).isoformat() for i in range(5)
    ]
    assert status.meter_clock == "drifting"
    assert "days behind the edge's" in status.meter_clock_detail
    assert (
        len([r for r in caplog.records if "samples carry the edge's clock" in r.getMessage()]) == 1
    )


def test_the_simulated_meter_with_its_clock_off_the_edge_is_stamped_by_the_edge(
    make_simulator, tmp_path, cert_root
):
    meter_clock = ManualClock(datetime(2024, 6, 28, 11, 58, 0, tzinfo=UTC))  # 2 min slow
    edge_clock = ManualClock(datetime(2024, 6, 28, 12, 0, 0, 250_000, tzinfo=UTC))
    sim = make_simulator(clock=meter_clock)
    config = MeterConfig(
        host=sim.address, api="v2", token=sim.token, ca_file=sim.ca_file, serial=sim.serial
    )
    with HomeWizardClient(config) as meter, Spool(tmp_path / "spool.sqlite3") as spool:
        poller = Poller(meter, spool, now=_edge_now(edge_clock))
        for _ in range(4):
            assert poller.step().state == SPOOLED
            meter_clock.advance(1)
            edge_clock.advance(1)
        stored = [p.sample["ts"] for p in spool.oldest(10)]
        assert spool.status().meter_clock == "drifting"
    assert stored == [(edge_clock.moment - _s(4 - i)).isoformat() for i in range(4)]


def test_after_a_restart_a_repolled_telegram_is_still_one_sample(make_simulator, tmp_path, clock):
    sim = make_simulator()
    config = MeterConfig(
        host=sim.address, api="v2", token=sim.token, ca_file=sim.ca_file, serial=sim.serial
    )
    path = tmp_path / "spool.sqlite3"
    for expected in (SPOOLED, DUPLICATE):  # the second Poller is run_edge after a restart
        with HomeWizardClient(config) as meter, Spool(path) as spool:
            assert Poller(meter, spool, now=_edge_now(clock)).step().state == expected
    with Spool(path) as spool:
        assert spool.depth() == 1


def test_after_a_restart_a_stuck_meter_clock_does_not_cost_the_next_reading(
    tmp_path, clock, cert_root
):
    clock.set(datetime(2024, 6, 28, 12, 12, 34, 300_000, tzinfo=UTC))
    path = tmp_path / "spool.sqlite3"
    before = _v2_answer("2024-06-28T14:12:34", 500, 13779.338)
    after = _v2_answer("2024-06-28T14:12:34", 650, 13779.339)  # same time, new values
    for answer in (before, after):  # one run_edge, then another after a restart
        with (
            recorded_meter([answer], api="v2", cert_dir=cert_root / "recorded") as meter,
            Spool(path) as spool,
        ):
            assert Poller(meter, spool, now=_edge_now(clock)).step().state == SPOOLED
        clock.advance(5)
    with Spool(path) as spool:
        stored = [p.sample for p in spool.oldest(10)]
    assert [(s["ts"], s["power_w"]) for s in stored] == [
        ("2024-06-28T12:12:34+00:00", 500.0),
        ("2024-06-28T12:12:39.300000+00:00", 650.0),
    ]


def test_after_a_restart_with_a_drained_spool_no_sample_goes_before_the_uploaded_ones(
    tmp_path, clock, cert_root
):
    # Found in review: the clock remembered only the newest *pending* sample, so after
    # the uploader drained the spool a restart forgot where the ts stood. A meter 40 s
    # behind is stamped by the edge's clock; trusted again at 20 s behind after the
    # restart, its time fell before the samples the server already had: out of order,
    # the server saw its registers go down (register breaks that are no meter change).
    clock.set(datetime(2024, 6, 28, 12, 12, 34, tzinfo=UTC))
    path = tmp_path / "spool.sqlite3"
    behind_40 = [
        _v2_answer(f"2024-06-28T14:11:{54 + 2 * i:02d}", 500 + i, 13779.338) for i in (0, 1, 2)
    ]
    with (
        recorded_meter(behind_40, api="v2", cert_dir=cert_root / "recorded") as meter,
        Spool(path) as spool,
    ):
        poller = Poller(meter, spool, now=_edge_now(clock))
        for _ in behind_40:
            assert poller.step().state == SPOOLED
            clock.advance(2)
        uploaded = spool.oldest(10)
        spool.acknowledge([p.key for p in uploaded])  # the server has them all
    last_uploaded = datetime.fromisoformat(uploaded[-1].sample["ts"])
    behind_20 = _v2_answer("2024-06-28T14:12:20", 520, 13779.340)  # edge is at 12:12:40
    with (
        recorded_meter([behind_20], api="v2", cert_dir=cert_root / "recorded") as meter,
        Spool(path) as spool,
    ):
        assert spool.depth() == 0
        assert Poller(meter, spool, now=_edge_now(clock)).step().state == SPOOLED
        (after,) = spool.oldest(10)
    assert datetime.fromisoformat(after.sample["ts"]) > last_uploaded
