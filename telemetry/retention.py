"""Raw-sample retention: samples older than RAW_SAMPLE_RETENTION_MONTHS go, the rest stays.

What every answer reads is kept forever: the 15-minute and hourly rollups (series at
every interval, the meter's own peaks), the capacity quarters and months (the tariff's
answers) and the register breaks (meter swaps). Raw samples only feed those as they
arrive, and the realtime answer reads the newest ones; so once a range is older than
the horizon its samples can go without changing an answer.

The horizon is a whole hour, ``months`` calendar months before now (UTC): no rollup
bucket straddles it, so a rollup recomputed from raw samples after a prune never lacks
pruned rows. Ingest refuses samples older than the horizon (telemetry.validation): a
reading there would land beside pruned ones, in buckets that can no longer be
recomputed (the edge keeps such a reading in its quarantine, reported).

The deleting itself is the storage plan's (StoragePlan.prune_samples): bounded batches
per device on PostgreSQL and SQLite, whole chunks on TimescaleDB. ``manage.py
prune_samples`` runs it (docs/DEPLOY.md section 9); nothing in a request does.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

# The rolling 12-month average needs 12 whole months besides the running one.
MIN_MONTHS = 13


@dataclass(frozen=True)
class Pruned:
    """One prune: the horizon asked for, how many raw samples were deleted, and the
    moment before which none is left (on TimescaleDB the chunk boundary at or before
    the horizon: whole chunks go)."""

    horizon: datetime
    samples: int
    before: datetime


def months_before(moment: datetime, months: int) -> datetime:
    """The same time ``months`` calendar months earlier, in UTC; a day the earlier month
    lacks becomes its last (31 March less one month is 28 or 29 February)."""
    moment = moment.astimezone(UTC)
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def horizon(now: datetime, months: int | None = None) -> datetime | None:
    """Raw samples before this moment are not kept; None: they are kept forever.
    ``months`` defaults to settings.RAW_SAMPLE_RETENTION_MONTHS."""
    if months is None:
        months = settings.RAW_SAMPLE_RETENTION_MONTHS
    if not months:
        return None
    return months_before(now, months).replace(minute=0, second=0, microsecond=0)


def prune_raw_samples(now: datetime) -> Pruned | None:
    """Delete every raw sample older than the horizon at ``now``; None when retention is
    off (RAW_SAMPLE_RETENTION_MONTHS unset or 0)."""
    from telemetry.storage import plan_for

    limit = horizon(now)
    if limit is None:
        return None
    deleted, before = plan_for().prune_samples(limit)
    return Pruned(limit, deleted, before)
