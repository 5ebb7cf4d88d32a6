"""Liveness and readiness for load balancers and container health checks."""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready when the database answers; the cache is reported but optional."""
    database = _database_status()
    cache = _cache_status()
    ready = database == "ok"
    body = {"status": "ready" if ready else "not ready", "database": database, "cache": cache}
    return JsonResponse(body, status=200 if ready else 503)


def _database_status() -> str:
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
