"""The chaos run's verdict, as pure functions: what the meter served against what the
server stored, with the losses a SIGKILL may explain told apart from real ones.

Only one loss is allowed: a measurement answer the simulator served to an edge that was
SIGKILLed before the answer reached the spool. It can only happen near a kill, and
each kill can cost at most one answer (the poll loop has one request in flight).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

# From a measurement answer leaving the simulator to its spool commit: a few ms normally,
# over 1 s on 2 busy cores (see tests/edge_pipeline/test_run_edge.py).
SERVE_TO_SPOOL_S = 2.5
# The kill time is read just before the signal; the answer's log line can trail it.
KILL_CLOCK_SLACK_S = 0.05
# A telegram's ts is its whole second: it was served somewhere within the next second.
TELEGRAM_S = 1.0


def utc_iso(moment: datetime) -> str:
    """The simulator log's spelling of a timestamp: ISO 8601 in UTC, +00:00."""
    return moment.astimezone(UTC).isoformat()


def parse_served_log(text: str) -> list[str]:
    """The ts of every measurement answer in simulate_p1's --log, one per answer.

    Raises ValueError naming the line when one is not an ISO 8601 time with an offset.
    """
    served = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            moment = datetime.fromisoformat(line)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise ValueError(f"simulator log line {number}: not a timestamp with offset: {line!r}")
        served.append(utc_iso(moment))
    return served


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def kill_may_lose(ts: str, killed_at: float, serve_to_spool_s: float = SERVE_TO_SPOOL_S) -> bool:
    """Could a SIGKILL at ``killed_at`` have cost the answer with telegram ``ts``?

    Yes if the answer was served before the kill (its second began before it) and not so
    long before that it must already have been spooled.
    """
    since = killed_at - epoch(ts)
    return -KILL_CLOCK_SLACK_S <= since < TELEGRAM_S + serve_to_spool_s


def explain_losses(
    missing: Iterable[str], kills: Sequence[float], serve_to_spool_s: float = SERVE_TO_SPOOL_S
) -> tuple[dict[str, float], list[str]]:
    """Pair each missing ts with a kill that may have cost it, each kill at most once.

    Returns ({ts: kill time} explained, [ts] unexplained). Both are intervals on one time
    line, so pairing in time order with the earliest usable kill is a maximum matching.
    """
    explained: dict[str, float] = {}
    unexplained: list[str] = []
    used: set[int] = set()
    for ts in sorted(missing, key=epoch):
        for index, killed_at in sorted(enumerate(kills), key=lambda item: item[1]):
            if index not in used and kill_may_lose(ts, killed_at, serve_to_spool_s):
                explained[ts] = killed_at
                used.add(index)
                break
        else:
            unexplained.append(ts)
    return explained, unexplained


def spool_waits(
    first_stored: Mapping[str, float],
    spooled_at: Mapping[str, float],
    left_spool: Mapping[str, float],
) -> dict[str, float]:
    """Seconds each stored sample waited in the spool: from its commit there (the
    spool's own ``spooled_at``) to the first look that found it gone (acknowledged).

    The spool is a local file, readable whatever the servers do. A sample that came and
    went between two looks, or whose departure no look saw, counts until it was first
    seen in the database (``first_stored``), from its commit or else from its telegram
    second: an upper bound, so the longest wait is never under-reported.
    """
    waits = {}
    for ts, stored_at in first_stored.items():
        if ts in spooled_at and ts in left_spool:
            waits[ts] = left_spool[ts] - spooled_at[ts]
        else:
            waits[ts] = stored_at - spooled_at.get(ts, epoch(ts))
    return {ts: max(0.0, wait) for ts, wait in waits.items()}


# run_edge logs one line per state change (not per failed attempt); see edgeclient.
_TROUBLE = re.compile(r"upload failing \((\w+)\)|(meter unreachable)")


def edge_troubles(edge_log: Iterable[str]) -> dict[str, int]:
    """How often run_edge's log says an upload began failing (by state) or the meter
    went away: evidence that each outage really reached the edge."""
    counts: Counter[str] = Counter()
    for line in edge_log:
        if found := _TROUBLE.search(line):
            counts[found.group(1) or "meter unreachable"] += 1
    return dict(sorted(counts.items()))


@dataclass(frozen=True)
class Verdict:
    answers: int  # measurement answers served (a telegram polled twice counts twice)
    served: int  # distinct readings served
    stored: int  # rows in the database for the device
    duplicates: int  # rows beyond one per ts
    lost_at_kill: dict[str, float]  # ts -> the kill that explains it
    lost: list[str]  # served, not stored, not explained by a kill
    unexpected: list[str]  # stored but never served
    quarantined: int
    kills: int
    max_wait_s: float | None
    max_wait_ts: str | None
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def judge(
    served_log: Sequence[str],
    stored: Sequence[str],
    kills: Sequence[float],
    quarantined: int,
    waits: Mapping[str, float],
    serve_to_spool_s: float = SERVE_TO_SPOOL_S,
) -> Verdict:
    """Compare the simulator's log with the database's rows (ts as ISO UTC strings)."""
    served = set(served_log)
    counts = Counter(stored)
    duplicates = sum(n - 1 for n in counts.values())
    explained, lost = explain_losses(served - counts.keys(), kills, serve_to_spool_s)
    unexpected = sorted(counts.keys() - served, key=epoch)
    problems = []
    if lost:
        problems.append(f"{len(lost)} served samples lost outside a kill: {lost[:5]}")
    if duplicates:
        dup = sorted(ts for ts, n in counts.items() if n > 1)
        problems.append(f"{duplicates} duplicate rows: {dup[:5]}")
    if unexpected:
        problems.append(f"{len(unexpected)} stored samples never served: {unexpected[:5]}")
    if quarantined:
        problems.append(f"quarantine holds {quarantined} samples")
    if not served:
        problems.append("the simulator served nothing")
    worst = max(waits, key=waits.__getitem__, default=None)
    return Verdict(
        answers=len(served_log),
        served=len(served),
        stored=sum(counts.values()),
        duplicates=duplicates,
        lost_at_kill=explained,
        lost=lost,
        unexpected=unexpected,
        quarantined=quarantined,
        kills=len(kills),
        max_wait_s=waits[worst] if worst is not None else None,
        max_wait_ts=worst,
        problems=problems,
    )


def report(verdict: Verdict) -> str:
    """The table the chaos run prints."""
    wait = "n/a"
    if verdict.max_wait_s is not None:
        wait = f"{verdict.max_wait_s:.1f} s (sample {verdict.max_wait_ts})"
    rows = [
        ("served", f"{verdict.served} readings ({verdict.answers} answers)"),
        ("stored", str(verdict.stored)),
        ("duplicates", str(verdict.duplicates)),
        ("lost", str(len(verdict.lost))),
        (
            "lost-in-the-instant-of-a-kill",
            f"{len(verdict.lost_at_kill)} (of {verdict.kills} kills; allowed, reported apart)",
        ),
        ("stored, never served", str(len(verdict.unexpected))),
        ("quarantined", str(verdict.quarantined)),
        ("longest wait in the spool", wait),
        ("result", "PASS" if verdict.passed else "FAIL"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name:<{width}}  {value}" for name, value in rows]
    lines += [f"  problem: {problem}" for problem in verdict.problems]
    return "\n".join(lines)
