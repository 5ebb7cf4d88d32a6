"""Cached series answers: per device, interval and range, dropped by exactly the batches
that change them.

An answer is kept with the span of samples it was computed from
(telemetry.series.Dependence: from the last sample before its first bucket to the first
after its last). A stored batch drops the answers of its device whose span its samples
[oldest, newest] reach, and no other: a backlog batch for last March leaves today's
answers, today's batch leaves last year's. Why that is exact: an answer reads its
buckets' rollup rows and the nearest row on either side; a sample outside the span
changes none of those, and a register break outside it shifts every reading the answer
uses by the same step, which no difference of readings sees.

Who drops: ``forget_after_batch``, called by the ingest step that drops the realtime
answer (capacity.realtime, with that answer's key: one round trip for both), named in
both INGEST_RECEIPT_STEPS (so live data shows at once) and INGEST_STEPS (after
TimescaleDB's refresh of an old window, which a read right after the receipt may not
have seen yet, and after telemetry.series_blocks dropped the stored blocks the batch
reaches, which an answer assembled in between may have used).

Never older than SERIES_CACHE_TTL_S: every answer expires then whatever happens, and a
fill that raced a drop is not stored (a per-device generation, compared in the same
atomic Redis call that stores). Without Redis each process keeps its own answers in
memory and a batch drops only those of the process that stored it; the others' expire
within the TTL. Redis down: answers are computed every time, never an error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from redis.exceptions import RedisError

from telemetry.models import Device
from telemetry.pipeline import StoredBatch
from telemetry.series import Dependence

logger = logging.getLogger(__name__)

# Part of every key: a release that changes the answers' shape changes it.
_VERSION = "1"
# In local memory, per process: enough for a household's dashboards.
LOCAL_ENTRIES = 512
_UNBOUNDED = "-"

# The buckets as the JSON array the answer embeds, and the span they depend on.
Compute = Callable[[], tuple[bytes, Dependence]]
# A change to drop answers for: device, oldest, newest, and other keys it makes stale.
Touched = tuple[int, datetime, datetime, Sequence[str]]


def answer_key(device: Device, interval: str, first: datetime, last: datetime) -> str:
    """The key of the buckets between the outer boundaries ``first`` and ``last``
    (telemetry.series.outer_bounds): a dashboard asking "up to now" every few seconds
    asks the same buckets until the last one closes."""
    # The zone decides the buckets: a new zone set in the admin must not serve old ones.
    return f"series:{_VERSION}:{device.pk}:{device.timezone}:{interval}:{_us(first)}:{_us(last)}"


def _us(moment: datetime) -> int:
    """Microseconds since the epoch: exact, and a Lua number holds it exactly."""
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _span(dependence: Dependence) -> str:
    first = _UNBOUNDED if dependence.first is None else str(_us(dependence.first))
    last = _UNBOUNDED if dependence.last is None else str(_us(dependence.last))
    return f"{first} {last}"


def cached_series(device_pk: int, key: str, compute: Compute) -> bytes:
    """The buckets under ``key`` as JSON: cached, or computed (with the span they depend
    on) and stored for SERIES_CACHE_TTL_S unless a batch of the device was stored
    meanwhile. Bytes, so a hit is served without parsing (telemetry.renderers)."""
    if not settings.SERIES_CACHE_TTL_S:
        return compute()[0]
    return _backend().fetch(device_pk, key, compute)


def forget_touched(
    device_pk: int, oldest: datetime, newest: datetime, also: Sequence[str] = ()
) -> int:
    """Drop the device's cached answers whose span [oldest, newest] reaches, and the cache
    keys ``also`` (another of the device's answers the same change makes stale, in the
    same round trip); how many series answers."""
    return _backend().forget(device_pk, oldest, newest, also)


def forget_after_batches(
    batches: Sequence[StoredBatch], also: Callable[[StoredBatch], Sequence[str]] = lambda b: ()
) -> None:
    """Ingest step: once the batches are committed, the answers they touch are stale
    (and each batch's keys ``also``), dropped in one round trip. Before the commit a
    concurrent read could store the old answer again."""
    touched = [(b.device_pk, b.oldest, b.newest, also(b)) for b in batches]
    transaction.on_commit(lambda: _backend().forget_many(touched))


# --- Redis: shared by every process -----------------------------------------------------

# KEYS: generation, answer, index. ARGV: generation seen ("" for none), answer, span, ttl.
_STORE = """
local now = redis.call('GET', KEYS[1]) or ''
if now ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
redis.call('HSET', KEYS[3], KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"""
# KEYS: generation, index, then keys dropped as they are. ARGV: oldest, newest
# (microseconds), generation's lifetime.
_FORGET = """
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
local oldest, newest = tonumber(ARGV[1]), tonumber(ARGV[2])
local entries = redis.call('HGETALL', KEYS[2])
local dropped = 0
for i = 1, #entries, 2 do
  local first, last = string.match(entries[i + 1], '^(%S+) (%S+)$')
  if (first == '-' or newest >= tonumber(first)) and (last == '-' or oldest <= tonumber(last)) then
    redis.call('DEL', entries[i])
    redis.call('HDEL', KEYS[2], entries[i])
    dropped = dropped + 1
  end
end
return dropped
"""


class _Redis:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.store = client.register_script(_STORE)
        self.drop = client.register_script(_FORGET)

    @staticmethod
    def _names(device_pk: int) -> tuple[str, str]:
        # The index must outlive every answer it lists: it is renewed at each store.
        return cache.make_key(f"series-gen:{device_pk}"), cache.make_key(
            f"series-index:{device_pk}"
        )

    def fetch(self, device_pk: int, key: str, compute: Compute) -> bytes:
        generation, index = self._names(device_pk)
        name = cache.make_key(key)
        try:
            stored, seen = self.client.mget([name, generation])
        except RedisError:
            logger.warning("cache unreachable: series computed without it", exc_info=True)
            return compute()[0]
        if stored is not None:
            return bytes(stored)
        answer, dependence = compute()
        ttl = settings.SERIES_CACHE_TTL_S
        try:
            self.store(
                keys=[generation, name, index], args=[seen or b"", answer, _span(dependence), ttl]
            )
        except RedisError:
            logger.warning("cache unreachable: series answer not stored", exc_info=True)
        return answer

    def forget(
        self, device_pk: int, oldest: datetime, newest: datetime, also: Sequence[str]
    ) -> int:
        return self.forget_many([(device_pk, oldest, newest, also)])

    def forget_many(self, touched: Sequence[Touched]) -> int:
        # Longer than any fill takes: a fill that saw the old generation must not find
        # the key gone (and take "none" for unchanged).
        lifetime = max(settings.SERIES_CACHE_TTL_S, 1) * 2

        def drop(item: Touched, client: Any = None) -> Any:
            device_pk, oldest, newest, also = item
            generation, index = self._names(device_pk)
            keys = [generation, index, *(cache.make_key(key) for key in also)]
            return self.drop(keys=keys, args=[_us(oldest), _us(newest), lifetime], client=client)

        try:
            if len(touched) == 1:
                # A pipeline of scripts checks them first: a round trip more.
                return int(drop(touched[0]))
            with self.client.pipeline(transaction=False) as pipe:
                for item in touched:
                    drop(item, pipe)
                return sum(int(dropped) for dropped in pipe.execute())
        except RedisError:
            # Then the answers expire within the TTL: stale that long at most.
            logger.warning("cache unreachable: series answers not dropped", exc_info=True)
            return 0


# --- local memory: one process ----------------------------------------------------------


class _Local:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        # key -> (expires at, device, dependence, answer), oldest first.
        self.entries: OrderedDict[str, tuple[float, int, Dependence, bytes]] = OrderedDict()
        self.generations: dict[int, int] = {}

    def fetch(self, device_pk: int, key: str, compute: Compute) -> bytes:
        now = time.monotonic()
        with self.lock:
            found = self.entries.get(key)
            if found is not None and found[0] > now:
                return found[3]
            seen = self.generations.get(device_pk, 0)
        answer, dependence = compute()
        with self.lock:
            if self.generations.get(device_pk, 0) == seen:
                self.entries[key] = (
                    now + settings.SERIES_CACHE_TTL_S,
                    device_pk,
                    dependence,
                    answer,
                )
                self.entries.move_to_end(key)
                while len(self.entries) > LOCAL_ENTRIES:
                    self.entries.popitem(last=False)
        return answer

    def forget(
        self, device_pk: int, oldest: datetime, newest: datetime, also: Sequence[str]
    ) -> int:
        if also:
            cache.delete_many(list(also))
        with self.lock:
            self.generations[device_pk] = self.generations.get(device_pk, 0) + 1
            touched = [
                key
                for key, (_, device, dependence, _) in self.entries.items()
                if device == device_pk and dependence.touched_by(oldest, newest)
            ]
            for key in touched:
                del self.entries[key]
        return len(touched)

    def forget_many(self, touched: Sequence[Touched]) -> int:
        return sum(self.forget(*item) for item in touched)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


# Per backend and location (tests point the cache elsewhere).
_chosen: dict[str, _Redis | _Local] = {}
_choose_lock = threading.Lock()


def _backend() -> _Redis | _Local:
    """Redis when the default cache is, else this process's memory; chosen once."""
    config = settings.CACHES["default"]
    backend = f"{config['BACKEND']} {config.get('LOCATION', '')}"
    found = _chosen.get(backend)
    if found is None:
        with _choose_lock:
            found = _chosen.get(backend)
            if found is None:
                if "django_redis" in backend:
                    client = cache.client.get_client(write=True)  # type: ignore[attr-defined]  # django-redis
                    found = _Redis(client)
                else:
                    found = _Local()
                _chosen[backend] = found
    return found


def clear_local() -> None:
    """Forget this process's in-memory answers (the cache is cleared between tests)."""
    for backend in _chosen.values():
        if isinstance(backend, _Local):
            backend.clear()
