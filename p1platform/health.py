"""Liveness and readiness for load balancers and container health checks."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from p1common.replica import REPLICA_ALIAS, replica_configured
from telemetry.models import PendingBatch


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready when the database answers. Reported but optional: the cache, the read
    replica when there is one (ingest needs neither), and how long the oldest stored
    batch has waited for its ingest steps (a stopped worker shows here first: capacity
    answers go stale while ingest still succeeds)."""
    database = _database_status()
    cache = _cache_status()
    ready = database == "ok"
    body: dict[str, object] = {
        "status": "ready" if ready else "not ready",
        "database": database,
        "cache": cache,
    }
    if replica_configured():
        body["replica"] = _database_status(REPLICA_ALIAS)
    if ready:
        body["owed_steps_age_s"] = owed_steps_age_s(timezone.now())
    return JsonResponse(body, status=200 if ready else 503)


def owed_steps_age_s(now: datetime) -> float | None:
    """Seconds since the oldest batch still owing its ingest steps arrived; None: none."""
    # The lowest id is the oldest record (the primary key's index, no scan).
    oldest = PendingBatch.objects.order_by("id").values_list("received_at", flat=True).first()
    return None if oldest is None else round((now - oldest).total_seconds(), 1)


def _database_status(alias: str = DEFAULT_DB_ALIAS) -> str:
    connection = connections[alias]
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except DatabaseError:
        # Drop the broken connection so the next request reconnects.
        connection.close_if_unusable_or_obsolete()
        return "down"


def _cache_status() -> str:
    if not settings.REDIS_URL:
        return "local-memory"
    from django_redis import get_redis_connection
    from redis.exceptions import RedisError

    try:
        get_redis_connection("default").ping()
        return "ok"
    except RedisError:
        return "down"
