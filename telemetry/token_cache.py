"""Token lookups without a database query per request, and revocation at once.

Each process keeps the tokens it has looked up, each stamped with the token generation
it was read under. The generation lives in Redis and changes whenever any token is
saved or deleted (revocation above all). A request reads the generation, in the same
round trip as whatever cache keys its view wants anyway (``prefetch_cache_keys``), and
trusts its local copy only while the generation is unchanged: a revoked token is
refused on the very next request, in every process. A token one process read from the
database is also left in Redis with its generation, so the other processes take it from
there in the same round trip: after a restart or a token change, each token costs one
database read, not one per process. When Redis cannot be read, every request goes to
the database.

Only with a shared cache (REDIS_URL): a local-memory cache could not carry a
generation from one process to another.

With the ingest-steps worker, a token's use (at most once a minute per process) goes
into Redis in the same round trip, and the worker writes the uses to the database each
cycle (``write_deferred_uses``), as it does for the batches' tokens: an UPDATE and its
commit inside a dashboard's read made that read one of the slowest under load (every
process records each token it serves once a minute, a write every few reads with many
dashboards open). The "last used" time is then late by at most one worker cycle.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from telemetry.models import Device, DeviceToken
from telemetry.tokens import find_active_token, hash_token, record_uses, touch, use_is_due

GENERATION_KEY = "token-generation"
# A token as one process read it from the database, with the generation it was read
# under, for the others (keyed by the token's hash, never by the token).
SHARED_PREFIX = "token:"
# Token uses left for the ingest-steps worker to write: a hash, token pk -> ISO time.
USES_KEY = "token-uses"
# (cache key, period in seconds) of a counter a view wants incremented with the lookup.
Counter = tuple[str, int]
# (token pk, when) of a use recorded in the lookup's round trip.
Use = tuple[int, datetime]
logger = logging.getLogger(__name__)


@dataclass
class Lookup:
    token: DeviceToken | None
    prefetched: dict = field(default_factory=dict)
    # Values of the ``also`` keys (None where missing or when the cache is down).
    also: dict = field(default_factory=dict)
    # Each counter the view asked for, incremented in the same round trip (absent where
    # the token was not cached, None when the cache is down).
    counted: dict[str, int | None] = field(default_factory=dict)


class _Entry:
    __slots__ = ("expires", "generation", "token")

    def __init__(self, token: DeviceToken, generation: str, expires: float):
        self.token, self.generation, self.expires = token, generation, expires


_entries: OrderedDict[str, _Entry] = OrderedDict()
_lock = threading.Lock()


def lookup(
    raw: str,
    extra_keys: Callable[[Device], Iterable[str]] | None = None,
    also: Iterable[str] = (),
    record_use: bool = True,
    counters: Callable[[Device], Iterable[Counter]] | None = None,
) -> Lookup:
    """The token, with the view's cache keys and the ``also`` keys (whatever the caller
    checks for every token, such as its address's failed attempts) read in one go, and
    the view's ``counters`` for the token's device incremented in the same round trip.
    ``record_use``: stamp the token's last use here; False where the request records
    it later itself (ingest: with the steps its batch owes)."""
    also = list(also)
    ttl = settings.TOKEN_CACHE_TTL_S
    if not ttl:
        found = _from_database(raw, record_use)
        found.also = _pick(cache.get_many(also) if also else {}, also)
        return found
    token_hash = hash_token(raw)
    with _lock:
        entry = _entries.get(token_hash)
    shared_key = f"{SHARED_PREFIX}{token_hash}"
    keys = [GENERATION_KEY, *also]
    counted: list[Counter] = []
    use: Use | None = None
    if entry is not None:
        if extra_keys is not None:
            keys += list(extra_keys(entry.token.device))
        if counters is not None:
            counted = list(counters(entry.token.device))
        if record_use:
            # Due once a minute per token: only then is it worth asking about Redis.
            now = timezone.now()
            if use_is_due(entry.token, now) and defers_uses():
                use = (entry.token.pk, now)
    else:
        keys.append(shared_key)
    values, counts = read_and_count(keys, counted, use)
    generation = values.pop(GENERATION_KEY, None)
    shared = values.pop(shared_key, None)
    also_values = _pick(values, also)
    if entry is not None and generation == entry.generation and time.monotonic() < entry.expires:
        if use is not None:  # recorded in that round trip (it succeeded: it read a generation)
            entry.token.last_used_at = use[1]
        elif record_use:
            touch(entry.token)
        return Lookup(entry.token, values, also_values, counts)
    if (
        isinstance(shared, tuple)
        and generation is not None
        and shared[0] == generation
        and isinstance(shared[1], DeviceToken)
    ):
        # Another process read it from the database under this same generation.
        token = shared[1]
        if record_use:
            _record_use(token)
        _remember(token_hash, token, generation, ttl)
        return Lookup(token, also=also_values, counted=counts)
    # Read (or made) before the database: a change after this read bumps it again, so
    # a copy stamped with it can never outlive that change.
    current = generation or _ensure_generation()
    found = _from_database(raw, record_use)
    found.also = also_values
    found.counted = counts
    if found.token is not None:
        if current is not None:
            _remember(token_hash, found.token, current, ttl)
            # For the other processes: one database read per token, not one per process.
            cache.set(shared_key, (current, found.token), timeout=ttl)
    return found


def _remember(token_hash: str, token: DeviceToken, generation: str, ttl: int) -> None:
    with _lock:
        _entries[token_hash] = _Entry(token, generation, time.monotonic() + ttl)
        _entries.move_to_end(token_hash)
        while len(_entries) > settings.TOKEN_CACHE_ENTRIES:
            _entries.popitem(last=False)


def read_and_count(
    keys: list[str], counters: list[Counter], use: Use | None = None
) -> tuple[dict, dict[str, int | None]]:
    """The keys' values, and each counter incremented (it starts at 1 and expires
    ``period_s`` after its first increment), in one round trip when the cache is Redis;
    ``use`` left for the worker in the same round trip. With the cache down: no values
    and every count None."""
    if not counters and use is None:
        return cache.get_many(keys), {}
    client = _redis_client()
    if client is None:  # local memory (development): its own calls, no round trips
        return cache.get_many(keys), {key: increment(key, period) for key, period in counters}
    pipe = client.pipeline(transaction=False)
    made = [cache.make_key(key) for key in keys]
    if made:
        pipe.mget(made)
    for key, period in counters:
        name = cache.make_key(key)
        pipe.incr(name)
        pipe.expire(name, period, nx=True)
    if use is not None:
        pipe.hset(*_use_field(use))
    try:
        results = pipe.execute()
    except RedisError:
        # As django-redis does for every other call here (IGNORE_EXCEPTIONS): a Redis
        # outage must not turn into refused devices.
        logger.warning("cache unreachable: token check without it", exc_info=True)
        return {}, {key: None for key, _ in counters}
    values: dict = {}
    if made:
        decode = cache.client.decode  # type: ignore[attr-defined]  # django-redis, untyped
        values = {k: decode(v) for k, v in zip(keys, results[0], strict=True) if v is not None}
        results = results[1:]
    counts: dict[str, int | None] = {
        key: int(results[2 * i]) for i, (key, _) in enumerate(counters)
    }
    return values, counts


def defers_uses() -> bool:
    """Whether token uses go to Redis for the ingest-steps worker to write."""
    return bool(settings.INGEST_STEPS_WORKER) and _redis_client() is not None


def _use_field(use: Use) -> tuple[str, str, str]:
    """The hash, field and value that leave ``use`` for the worker."""
    pk, when = use
    return cache.make_key(USES_KEY), str(pk), when.isoformat()


def _record_use(token: DeviceToken) -> None:
    """A use outside the lookup's round trip (a token just read): for the worker in a
    round trip of its own, or written here (no worker, or Redis unreachable)."""
    now = timezone.now()
    if not use_is_due(token, now):
        return
    if defers_uses():
        try:
            _redis_client().hset(*_use_field((token.pk, now)))
        except RedisError:
            logger.warning("cache unreachable: token use written at once", exc_info=True)
        else:
            token.last_used_at = now
            return
    touch(token)


# Each field (ARGV: field, value, field, value...) removed unless a newer use replaced
# it since it was read: that one is written next time.
_FORGET_WRITTEN = """
local gone = 0
for i = 1, #ARGV, 2 do
    if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
        gone = gone + redis.call('HDEL', KEYS[1], ARGV[i])
    end
end
return gone
"""


def write_deferred_uses() -> int:
    """The ingest-steps worker's, each cycle: the token uses that lookups left in Redis,
    written in one statement, then removed from Redis (after the commit: a worker that
    dies between the two writes them again). How many were written; 0 when Redis is
    not the cache or cannot be reached (the uses wait there for the next cycle)."""
    client = _redis_client()
    if client is None:
        return 0
    key = cache.make_key(USES_KEY)
    try:
        taken = client.hgetall(key)
    except RedisError:
        logger.warning("cache unreachable: token uses left for the next cycle", exc_info=True)
        return 0
    if not taken:
        return 0
    try:
        record_uses({int(pk): datetime.fromisoformat(when.decode()) for pk, when in taken.items()})
    except DatabaseError:
        logger.warning("token uses not written: left for the next cycle", exc_info=True)
        return 0
    forget_written(taken)
    return len(taken)


def forget_written(taken: dict[bytes, bytes]) -> None:
    """Remove the uses written (field: value as read) from Redis, each unless a newer
    use replaced it since it was read."""
    client = _redis_client()
    if client is None or not taken:
        return
    pairs = [part for item in taken.items() for part in item]
    try:
        client.eval(_FORGET_WRITTEN, 1, cache.make_key(USES_KEY), *pairs)
    except RedisError:
        logger.warning("cache unreachable: written token uses are written again", exc_info=True)


def increment(key: str, period_s: int) -> int | None:
    """Add one to a counter that starts at 1 and expires ``period_s`` after that; None
    when the cache is down."""
    if cache.add(key, 1, timeout=period_s):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr: a new period begins
        return 1 if cache.add(key, 1, timeout=period_s) else None


def _redis_client() -> Any:
    """The raw Redis client behind the default cache, or None when it is not Redis."""
    backend = str(settings.CACHES["default"]["BACKEND"])
    if "django_redis" not in backend:
        return None
    return cache.client.get_client(write=True)  # type: ignore[attr-defined]  # django-redis


def _pick(values: dict, keys: list[str]) -> dict:
    return {key: values.pop(key, None) for key in keys}


def _from_database(raw: str, record_use: bool) -> Lookup:
    token = find_active_token(raw)
    if token is not None and record_use:
        _record_use(token)
    return Lookup(token)


def _ensure_generation() -> str | None:
    """The generation, created if Redis lost it; None when Redis cannot be reached."""
    cache.add(GENERATION_KEY, uuid.uuid4().hex, timeout=None)
    return cache.get(GENERATION_KEY)


def bump_generation(sender: object = None, instance: object = None, **kwargs: object) -> None:
    """Signal receiver for any token change: every process re-reads its tokens. Again
    once the change commits: a lookup between the signal and the commit still read the
    old row, and must not be trusted under the generation it saw."""
    _new_generation()
    transaction.on_commit(_new_generation)


def _new_generation() -> None:
    cache.set(GENERATION_KEY, uuid.uuid4().hex, timeout=None)
