"""The upload loop's retry policy, as pure functions: randomness and clock come in.

Exponential backoff with full jitter between 0 and a ceiling that doubles from 2 s up to
a cap (60 s by default), unless the server said when to come back (Retry-After).

The cap is a minute because an outage ends unseen: with 300 s, a server back after a
one-minute restart waited up to five more minutes for the household's readings (the
live view stale all that time), while one attempt a minute per home costs a recovering
server nothing. Jitter still spreads a fleet of edges over that minute.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from datetime import UTC

BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 60.0
# A Retry-After beyond this is more likely a misconfigured proxy than a plan.
RETRY_AFTER_MAX_S = 3600.0


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322, not this machine's zone
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def retry_delay(
    failures: int,
    random: Callable[[], float],
    *,
    retry_after_s: float | None = None,
    base_s: float = BACKOFF_BASE_S,
    cap_s: float = BACKOFF_MAX_S,
) -> float:
    """Seconds before the next attempt after ``failures`` consecutive failures.

    The server's Retry-After wins when it gave one. Otherwise exponential backoff with
    full jitter: uniform in [0, min(cap, base * 2^(failures-1))), so a fleet of edges that
    lost the server together does not come back in lock-step.
    """
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), RETRY_AFTER_MAX_S)
    exponent = min(max(failures, 1) - 1, 32)  # 2**32 * base is far past any cap
    return random() * min(cap_s, base_s * 2**exponent)
