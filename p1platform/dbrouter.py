"""The database router installed when DATABASE_REPLICA_URL is set.

It has no opinion of its own about models: a read goes to the replica only inside
``p1common.replica.replica_reads()``, the explicit choice a read endpoint makes around
its selectors (p1common/replica.py says why). Writes and migrations always go to the
primary; tokens, sessions and users are read there even inside that block, so a token
issued or revoked a moment ago counts at once, whatever the replica has replayed.
"""

from __future__ import annotations

from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.db.models import Model

from p1common.replica import REPLICA_ALIAS, read_alias

# Whose answer must never be a moment old: who the caller is and what they may do.
PRIMARY_ONLY = frozenset(
    {
        "telemetry.devicetoken",
        "sessions.session",
        "auth.user",
        "auth.group",
        "auth.permission",
        "contenttypes.contenttype",
    }
)
_SAME_DATA = frozenset({DEFAULT_DB_ALIAS, REPLICA_ALIAS})


class ReplicaRouter:
    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        if model._meta.label_lower in PRIMARY_ONLY:
            return DEFAULT_DB_ALIAS
        alias = read_alias()
        # None: Django's own choice, which is the primary unless a related object was
        # itself read from the replica.
        return alias if alias != DEFAULT_DB_ALIAS else None

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        # The replica holds the primary's rows: a device read from one and a sample
        # from the other are the same data.
        if {obj1._state.db, obj2._state.db} <= _SAME_DATA:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        # The replica replays the primary's migrations; it cannot run its own.
        return db == DEFAULT_DB_ALIAS
