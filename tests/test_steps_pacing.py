"""The ingest-steps worker's pace: rests between chunks in proportion to their work,
cut so that the chunks left still end by the cycle's deadline (telemetry.pacing)."""

from __future__ import annotations

import pytest

from telemetry.pacing import DEADLINE_SHARE, Pace


class Clock:
    """A clock the test moves; the rests it is asked for are recorded, not slept."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.rests: list[float] = []

    def __call__(self) -> float:
        return self.now

    def rest(self, seconds: float) -> None:
        self.rests.append(seconds)
        self.now += seconds


def pace(duty: float, deadline: float, clock: Clock) -> Pace:
    return Pace(duty, deadline, clock=clock, rest=clock.rest)


def test_a_chunk_is_followed_by_a_rest_that_leaves_the_work_its_duty_share():
    clock = Clock()
    paced = pace(0.25, deadline=100.0, clock=clock)

    assert paced.after_chunk(0.2, chunks_left=3) == pytest.approx(0.6)
    assert paced.after_chunk(0.1, chunks_left=2) == pytest.approx(0.3)
    assert clock.rests == pytest.approx([0.6, 0.3])
    assert paced.rested_s == pytest.approx(0.9)


def test_rests_shrink_so_that_the_chunks_left_end_by_the_deadline_unpaced():
    clock = Clock(now=10.0)
    paced = pace(0.25, deadline=11.0, clock=clock)

    # Four chunks of 0.2 s are left: 0.8 s of work in the 1.0 s before the deadline.
    assert paced.after_chunk(0.2, chunks_left=4) == pytest.approx(0.2)
    # Now they no longer fit with any rest: the work goes first.
    assert paced.after_chunk(0.2, chunks_left=4) == 0.0
    assert clock.rests == pytest.approx([0.2])


@pytest.mark.parametrize(
    ("duty", "deadline", "took", "left"),
    [
        (1.0, 100.0, 0.2, 3),  # a full duty rests never
        (0.25, 100.0, 0.2, 0),  # nothing left: the cycle ends at once
        (0.25, 100.0, 0.0, 3),  # a chunk that took no time asks for no rest
        (0.25, 5.0, 0.2, 3),  # past the deadline already
    ],
)
def test_no_rest_without_work_before_it_or_room_after_it(duty, deadline, took, left):
    clock = Clock(now=10.0)

    assert pace(duty, deadline, clock).after_chunk(took, left) == 0.0
    assert clock.rests == []


@pytest.mark.parametrize("duty", [0.0, -0.5, 1.5])
def test_a_duty_outside_the_open_unit_interval_is_refused(duty):
    with pytest.raises(ValueError, match="duty"):
        Pace(duty, deadline=1.0)


def test_a_cycle_s_deadline_is_a_share_of_its_interval_from_its_start():
    assert Pace.for_cycle(0.5, began=100.0, interval_s=60).deadline == 100.0 + 60 * DEADLINE_SHARE
