"""Device tokens: random, shown once, stored only as a SHA-256 hash.

SHA-256 without a salt is enough here: a token carries 256 random bits, so there is no
dictionary to precompute. The lookup narrows by prefix and compares hashes in constant
time, so response timing says nothing about how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from django.utils import timezone

from telemetry.models import Device, DeviceToken
from telemetry.storage import plan_for

TOKEN_BYTES = 32
PREFIX_LENGTH = 8
# Writing last_used_at on every request would add a write to every ingest.
LAST_USED_RESOLUTION_S = 60


class InvalidScopes(ValueError):
    pass


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def parse_scopes(text: str | Iterable[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = sorted({s.strip() for s in items if s.strip()})
    unknown = [s for s in scopes if s not in DeviceToken.SCOPES]
    if unknown or not scopes:
        raise InvalidScopes(
            f"scopes must be a non-empty list of {', '.join(DeviceToken.SCOPES)}; "
            f"got {', '.join(unknown) or 'none'}"
        )
    return scopes


def mint(token: DeviceToken, scopes: str | Iterable[str]) -> str:
    """Give an unsaved token a fresh secret; returns the raw value, never stored."""
    raw = secrets.token_urlsafe(TOKEN_BYTES)
    token.prefix = raw[:PREFIX_LENGTH]
    token.token_hash = hash_token(raw)
    token.scopes = ",".join(parse_scopes(scopes))
    return raw


def issue_token(
    device: Device, scopes: str | Iterable[str], label: str = ""
) -> tuple[DeviceToken, str]:
    """Create a token; the raw value is returned here and never again."""
    token = DeviceToken(device=device, label=label)
    raw = mint(token, scopes)
    token.save()
    return token, raw


def find_active_token(raw: str) -> DeviceToken | None:
    """The active token with this raw value, from the database, or None."""
    if len(raw) < PREFIX_LENGTH or len(raw) > 200:
        return None
    wanted = hash_token(raw)
    match = None
    candidates = DeviceToken.objects.select_related("device").filter(
        prefix=raw[:PREFIX_LENGTH], revoked_at__isnull=True
    )
    for candidate in candidates:
        if hmac.compare_digest(candidate.token_hash, wanted):
            match = candidate
    return match


def use_is_due(token: DeviceToken, now: datetime) -> bool:
    """Whether a use at ``now`` is to be recorded: at most once per resolution."""
    last = token.last_used_at
    return last is None or (now - last).total_seconds() >= LAST_USED_RESOLUTION_S


def touch(token: DeviceToken) -> None:
    """Record use at most once a minute: a write per request would slow every ingest."""
    now = timezone.now()
    if use_is_due(token, now):
        DeviceToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now


_TOKEN_USE_COLUMNS = (("token", "int"), ("used_at", "ts"))
# Each token's row at most once per LAST_USED_RESOLUTION_S (%(stale)s: the oldest use
# less that); raw, as the ORM's CASE of a hundred WHENs cost more than the statement.
_RECORD_USE = """
WITH used AS ({used})
UPDATE telemetry_devicetoken SET last_used_at = used.used_at
FROM used
WHERE telemetry_devicetoken.id = used.token
    AND (telemetry_devicetoken.last_used_at IS NULL
        OR telemetry_devicetoken.last_used_at < %(stale)s)
"""


def record_uses(used: Mapping[int, datetime]) -> None:
    """Many tokens' last use (token pk: when), in one statement: the ingest-steps
    worker's, for the batches and the reads it records them for."""
    if not used:
        return
    plan = plan_for()
    stale = min(used.values()) - timedelta(seconds=LAST_USED_RESOLUTION_S)
    with plan.prepared_cursor() as cursor:
        cursor.execute(
            _RECORD_USE.format(used=plan.rows_sql("used", _TOKEN_USE_COLUMNS)),
            {
                "used": plan.rows_param(sorted(used.items())),
                "stale": plan.connection.ops.adapt_datetimefield_value(stale),
            },
        )
