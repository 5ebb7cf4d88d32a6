"""The chaos run's rules (scripts/chaos): which losses a kill explains, what counts as a
duplicate, how long a sample waited, and when things happen. No processes run here."""

from __future__ import annotations

import itertools
import random

import pytest

from scripts.chaos import plan as chaos_plan
from scripts.chaos.accounting import (
    SERVE_TO_SPOOL_S,
    edge_troubles,
    epoch,
    explain_losses,
    judge,
    kill_may_lose,
    parse_served_log,
    report,
    spool_waits,
)

T0 = "2026-11-27T20:00:00+00:00"


def at(seconds: int) -> str:
    return f"2026-11-27T20:00:{seconds:02d}+00:00"


def test_the_served_log_is_read_as_utc_one_entry_per_answer():
    text = "2026-11-27T21:00:00+01:00\n2026-11-27T20:00:00+00:00\n\n2026-11-27T20:00:01+00:00\n"
    assert parse_served_log(text) == [T0, T0, at(1)]


def test_a_bad_served_log_line_is_named():
    with pytest.raises(ValueError, match="line 2: not a timestamp with offset"):
        parse_served_log(f"{T0}\n2026-11-27T20:00:01\n")


def test_a_kill_explains_only_an_answer_served_just_before_it():
    t = epoch(T0)
    assert kill_may_lose(T0, t + 0.5)  # served within its second, killed right after
    assert kill_may_lose(T0, t + 1 + SERVE_TO_SPOOL_S - 0.01)
    assert not kill_may_lose(T0, t + 1 + SERVE_TO_SPOOL_S)  # long since spooled
    assert not kill_may_lose(T0, t - 1)  # killed before the telegram even existed


def test_each_kill_explains_at_most_one_lost_answer():
    kill = epoch(at(10)) + 0.3
    explained, unexplained = explain_losses([at(9), at(10)], [kill])
    assert explained == {at(9): kill}
    assert unexplained == [at(10)]


def test_losses_are_paired_with_kills_so_that_most_are_explained():
    # at(10) could use either kill, at(12) only the later: a greedy pairing by kill
    # would give at(10) the later one and leave at(12) unexplained.
    early, late = epoch(at(10)) + 0.2, epoch(at(12)) + 0.2
    explained, unexplained = explain_losses([at(12), at(10)], [late, early])
    assert explained == {at(10): early, at(12): late}
    assert unexplained == []


def test_a_run_without_losses_or_duplicates_passes():
    served = [at(0), at(0), at(1), at(2)]  # one telegram polled twice
    verdict = judge(served, [at(2), at(0), at(1)], kills=[], quarantined=0, waits={at(0): 3})
    assert verdict.passed
    assert (verdict.answers, verdict.served, verdict.stored) == (4, 3, 3)
    assert (verdict.duplicates, verdict.lost, verdict.lost_at_kill) == (0, [], {})
    assert verdict.max_wait_s == 3


def test_a_loss_at_a_kill_is_reported_apart_and_passes():
    kill = epoch(at(1)) + 0.4
    verdict = judge([at(0), at(1), at(2)], [at(0), at(2)], [kill], 0, {})
    assert verdict.passed
    assert verdict.lost_at_kill == {at(1): kill}
    assert verdict.lost == []
    assert "lost-in-the-instant-of-a-kill  1 (of 1 kills" in report(verdict)


def test_a_loss_away_from_any_kill_fails_the_run():
    verdict = judge([at(0), at(1), at(30)], [at(0), at(1)], [epoch(at(1)) + 0.2], 0, {})
    assert not verdict.passed
    assert verdict.lost == [at(30)]
    assert "1 served samples lost outside a kill" in verdict.problems[0]
    assert "result" in report(verdict) and "FAIL" in report(verdict)


def test_a_duplicate_row_fails_the_run():
    verdict = judge([at(0), at(1)], [at(0), at(1), at(1)], [], 0, {})
    assert verdict.duplicates == 1
    assert not verdict.passed


def test_a_stored_sample_nobody_served_or_a_quarantined_one_fails_the_run():
    assert not judge([at(0)], [at(0), at(5)], [], 0, {}).passed
    assert judge([at(0)], [at(0), at(5)], [], 0, {}).unexpected == [at(5)]
    assert not judge([at(0)], [at(0)], [], 1, {}).passed


def test_an_empty_run_fails():
    assert not judge([], [], [], 0, {}).passed


def test_the_wait_runs_from_the_spool_commit_to_its_departure():
    t = epoch(at(0))
    waits = spool_waits({at(0): t + 75}, spooled_at={at(0): t + 0.2}, left_spool={at(0): t + 70})
    assert waits == {at(0): pytest.approx(69.8)}  # not inflated by a late look at the db


def test_a_sample_no_look_saw_leave_waits_until_the_database_had_it():
    t0, t1 = epoch(at(0)), epoch(at(1))
    first_stored = {at(0): t0 + 3.0, at(1): t1 + 0.6}
    waits = spool_waits(first_stored, spooled_at={at(0): t0 + 0.2}, left_spool={})
    # Counted from its commit where a look saw it pending, else from its telegram second.
    assert waits == {at(0): pytest.approx(2.8), at(1): pytest.approx(0.6)}


def test_the_edge_log_tells_which_outages_reached_the_edge():
    log = [
        "1.0 2026-11-27 WARNING edgeclient.uploader upload failing (server_error): HTTP 502",
        "2.0 2026-11-27 INFO edgeclient.uploader server back up after 60 s",
        "3.0 2026-11-27 WARNING edgeclient.uploader upload failing (unavailable): HTTP 503",
        "4.0 2026-11-27 WARNING edgeclient.uploader upload failing (server_error): HTTP 502",
        "5.0 2026-11-27 WARNING edgeclient.poller meter unreachable: connection refused",
    ]
    assert edge_troubles(log) == {"meter unreachable": 1, "server_error": 2, "unavailable": 1}


def test_the_bounded_plan_holds_every_outage_and_at_least_ten_spread_kills():
    events = chaos_plan.plan(chaos_plan.BOUNDED_S, random.Random(7))
    actions = [e.action for e in events]
    kills = [e.at_s for e in events if e.action == chaos_plan.KILL_EDGE]
    assert len(kills) >= 10
    assert all(b - a >= chaos_plan.MIN_KILL_GAP_S - 1e-6 for a, b in itertools.pairwise(kills))
    assert max(kills) <= chaos_plan.BOUNDED_S - chaos_plan.QUIET_END_S
    by_action = {e.action: e.at_s for e in events}
    assert by_action[chaos_plan.START_GUNICORN] - by_action[chaos_plan.STOP_GUNICORN] == 60
    assert by_action[chaos_plan.START_REDIS] - by_action[chaos_plan.STOP_REDIS] == 30
    assert by_action[chaos_plan.START_POSTGRES] - by_action[chaos_plan.STOP_POSTGRES] == 5
    assert chaos_plan.METER_OFFLINE in actions
    assert events == sorted(events)
    assert all(e.at_s < chaos_plan.BOUNDED_S for e in events)


def test_the_plan_is_the_same_for_the_same_seed_and_longer_runs_repeat_the_outages():
    assert chaos_plan.plan(300, random.Random(1)) == chaos_plan.plan(300, random.Random(1))
    assert chaos_plan.plan(300, random.Random(1)) != chaos_plan.plan(300, random.Random(2))
    long = chaos_plan.plan(600, random.Random(1))
    assert [e.action for e in long].count(chaos_plan.STOP_GUNICORN) == 4
    assert [e.action for e in long].count(chaos_plan.KILL_EDGE) == 50


def test_a_run_shorter_than_one_cycle_is_refused():
    with pytest.raises(ValueError, match="at least 150 s"):
        chaos_plan.plan(60, random.Random(1))
