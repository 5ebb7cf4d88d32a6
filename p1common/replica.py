"""Which database a read endpoint's queries go to: the primary, or its streaming replica.

A read endpoint chooses the replica explicitly, around its selectors only:

    device, query = self.read(request, SeriesQuery)   # access check: the primary
    with replica_reads():
        buckets = series(device.pk, ...)               # the data: the replica

Everything else reads the primary, whatever the models: ingest and the work it does in
its transaction (capacity quarters, register breaks, the peak guard), token and session
lookups, the admin, migrations. A router that sent every read of Sample or
capacity_quarter to the replica would break those: ingest reads back what it has just
written, and a token issued a moment ago exists only on the primary until the replica
has replayed it. So the choice is made where the answer may be a moment old, and only
there.

Under ``replica_reads()`` ORM queries reach the replica through
p1platform.dbrouter.ReplicaRouter and raw SQL through ``read_alias()``. Inside a
transaction on the primary, reads stay on the primary (they may need its uncommitted
rows). Without DATABASE_REPLICA_URL there is no replica alias and ``replica_reads()``
changes nothing.

A replica that cannot be reached is optional, like the cache: its reads go to the
primary instead, and the process tries the replica again after REPLICA_RETRY_S.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from contextvars import ContextVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

REPLICA_ALIAS = "replica"
# Long enough that an unreachable replica costs one connect attempt per process now and
# then, not one per request.
REPLICA_RETRY_S = 5.0

log = logging.getLogger(__name__)
_down_until = 0.0

# A ContextVar, not a thread-local: each gunicorn thread and each asyncio task has its
# own, so one request's choice never leaks into another's.
_chosen: ContextVar[str] = ContextVar("p1_read_alias", default=DEFAULT_DB_ALIAS)


def replica_configured() -> bool:
    return REPLICA_ALIAS in settings.DATABASES


@contextlib.contextmanager
def reads_from(alias: str) -> Iterator[str]:
    """Reads in the block go to ``alias`` (except inside a primary transaction)."""
    token = _chosen.set(alias)
    try:
        yield alias
    finally:
        _chosen.reset(token)


def replica_reads() -> contextlib.AbstractContextManager[str]:
    """Reads in the block go to the replica when one is configured and reachable, else
    the primary."""
    return reads_from(_usable_replica())


def _usable_replica() -> str:
    global _down_until
    if not replica_configured() or time.monotonic() < _down_until:
        return DEFAULT_DB_ALIAS
    replica = connections[REPLICA_ALIAS]
    try:
        # A kept connection the replica dropped (a restart) is found here, once a request.
        replica.close_if_health_check_failed()
        replica.ensure_connection()
    except DatabaseError as exc:
        _down_until = time.monotonic() + REPLICA_RETRY_S
        reason = next(iter(str(exc).strip().splitlines()), "") or type(exc).__name__
        log.warning(
            "read replica unreachable, reading the primary for %g s: %s", REPLICA_RETRY_S, reason
        )
        return DEFAULT_DB_ALIAS
    return REPLICA_ALIAS


def read_alias() -> str:
    """The alias a read made here goes to."""
    alias = _chosen.get()
    if alias != DEFAULT_DB_ALIAS and connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS
    return alias
