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

The same per-device generation guards another answer of the device kept under a key of
its own (capacity.realtime's): ``generation`` before computing it, ``store_unless_dropped``
to keep it only if no drop came meanwhile; ``forget_keys`` and ``forget_taking`` drop it
and move the generation on.

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
# A key dropped only when a change leaves its guard (see ``span_guard``): the key, and
# the guard's own key.
Guarded = tuple[str, str]
# A change to drop answers for: device, oldest, newest (None, None: no series answer),
# other keys it makes stale, and a guarded key.
Touched = tuple[int, datetime | None, datetime | None, Sequence[str], Guarded | None]
# A device's generation: Redis' counter as it stores it, or a local one.
Generation = bytes | int
# Per change of a ``forget_many``: the device, its generation after the drop, and whether
# the change dropped its guarded key (a cached answer was there and its guard failed).
Forgotten = tuple[int, Generation, bool]


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


def forget_keys(device_pk: int, keys: Sequence[str]) -> None:
    """Drop the device's cache keys ``keys`` (not its series answers) and move its
    generation on, so no fill that began before stores its answer."""
    _backend().forget(device_pk, None, None, keys)


def span_guard(after: datetime, before: datetime, covered: datetime) -> str:
    """A guard that keeps its key through a drop whose span lies strictly after
    ``after`` and before ``before`` and ends at or before ``covered`` (what the kept
    value already took in; ``store_unless_dropped``'s ``guard``)."""
    return f"{_us(after)} {_us(before)} {_us(covered)}"


def _guard_holds(guard: str, oldest: datetime | None, newest: datetime | None) -> bool:
    if oldest is None or newest is None:
        return False
    after, before, covered = (int(part) for part in guard.split())
    return _us(oldest) > after and _us(newest) < before and _us(newest) <= covered


def forget_taking(
    device_pk: int, oldest: datetime, newest: datetime, key: str, also: Sequence[str] = ()
) -> tuple[Any, Generation | None]:
    """As ``forget_touched`` with ``also=[key, *also]``, in the same round trip, and return
    what ``key`` held before the drop and the generation after it (None for both when
    the cache is down): the caller may store a successor with ``store_unless_dropped``."""
    return _backend().forget_taking(device_pk, oldest, newest, key, also)


def generation(device_pk: int) -> Generation | None:
    """The device's generation now (None: the cache is down), read before computing an
    answer for ``store_unless_dropped``."""
    return _backend().generation(device_pk)


def store_unless_dropped(
    device_pk: int,
    key: str,
    value: Any,
    ttl: int,
    seen: Generation,
    guard: tuple[str, str] | None = None,
) -> bool:
    """Cache ``value`` under ``key`` for ``ttl`` seconds unless a drop of the device came
    since its generation was ``seen``; whether it was stored. ``guard``: (its key, a
    ``span_guard``) stored with it, for drops that name the key guarded."""
    return _backend().store_unless_dropped(device_pk, key, value, ttl, seen, guard)


def forget_after_batches(
    batches: Sequence[StoredBatch],
    also: Callable[[StoredBatch], Sequence[str]] = lambda b: (),
    guarded: Callable[[StoredBatch], Guarded | None] = lambda b: None,
    refill: Callable[[dict[int, Generation]], None] | None = None,
) -> None:
    """Ingest step: once the batches are committed, the answers they touch are stale
    (and each batch's keys ``also``, and its ``guarded`` key unless the batch lies within
    the guard), dropped in one round trip. Before the commit a concurrent read could
    store the old answer again. ``refill`` is then called with the devices whose guarded
    key was cached and dropped, each with its generation after the last drop (for
    ``store_unless_dropped``)."""
    touched: list[Touched] = [
        (b.device_pk, b.oldest, b.newest, also(b), guarded(b)) for b in batches
    ]

    def after_commit() -> None:
        forgotten = _backend().forget_many(touched)
        if refill is None:
            return
        last: dict[int, Generation] = {}
        dropped: set[int] = set()
        for device_pk, generation, guarded_dropped in forgotten:
            last[device_pk] = generation
            if guarded_dropped:
                dropped.add(device_pk)
        if dropped:
            refill({pk: last[pk] for pk in sorted(dropped)})

    transaction.on_commit(after_commit)


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
# One device's drop. Its keys from KEYS[k] (``count`` of them): generation, index, then
# keys dropped as they are. oldest, newest: microseconds ("" for none: no series answer
# is dropped); lifetime: the generation's; mode: "take" to return the third key's value
# before it is dropped, or "guarded" when the third key is kept if the span lies within
# the guard held by the fourth ("after before covered", microseconds: see span_guard).
# Returns the number of series answers dropped, the new generation, the value taken,
# and 1 when the guarded key was there and dropped, else 0.
_FORGET_DEVICE = """
local function forget(k, count, oldest_us, newest_us, lifetime, mode)
  local generation = redis.call('INCR', KEYS[k])
  redis.call('EXPIRE', KEYS[k], lifetime)
  local taken = false
  local first = k + 2
  local guarded_dropped = 0
  if mode == 'take' then taken = redis.call('GET', KEYS[k + 2]) end
  if mode == 'guarded' then
    first = k + 4
    local guard = redis.call('GET', KEYS[k + 3])
    local keep = false
    if guard and oldest_us ~= '' then
      local after, before, covered = string.match(guard, '^(%S+) (%S+) (%S+)$')
      local oldest, newest = tonumber(oldest_us), tonumber(newest_us)
      keep = oldest > tonumber(after) and newest < tonumber(before) and newest <= tonumber(covered)
    end
    if not keep and redis.call('DEL', KEYS[k + 2], KEYS[k + 3]) > 0 then guarded_dropped = 1 end
  end
  for i = first, k + count - 1 do redis.call('DEL', KEYS[i]) end
  local dropped = 0
  if oldest_us == '' then return {dropped, generation, taken, guarded_dropped} end
  local oldest, newest = tonumber(oldest_us), tonumber(newest_us)
  local entries = redis.call('HGETALL', KEYS[k + 1])
  for i = 1, #entries, 2 do
    local first_us, last_us = string.match(entries[i + 1], '^(%S+) (%S+)$')
    local reached = first_us == '-' or newest >= tonumber(first_us)
    if reached and (last_us == '-' or oldest <= tonumber(last_us)) then
      redis.call('DEL', entries[i])
      redis.call('HDEL', KEYS[k + 1], entries[i])
      dropped = dropped + 1
    end
  end
  return {dropped, generation, taken, guarded_dropped}
end
"""
# One device: all of KEYS; ARGV: oldest, newest, lifetime, mode.
_FORGET = _FORGET_DEVICE + "return forget(1, #KEYS, ARGV[1], ARGV[2], ARGV[3], ARGV[4])\n"
# Redis runs one script at a time and every other client waits: a worker chunk's drops
# in one script held every request's round trip for up to a dozen milliseconds, so a
# chunk's go in scripts of this many devices.
_DROPS_PER_SCRIPT = 20
# Many devices in one call (a pipeline of scripts costs the client a command each): for
# each, five ARGV (its key count, then as _FORGET's) and its keys in turn; one reply each.
_FORGET_MANY = (
    _FORGET_DEVICE
    + """
local replies, k = {}, 1
for a = 1, #ARGV, 5 do
  local count = tonumber(ARGV[a])
  replies[#replies + 1] = forget(k, count, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
  k = k + count
end
return replies
"""
)
# KEYS: generation, key, and a guard's key. ARGV: generation seen ("" for none), value,
# ttl, and the guard.
_STORE_UNLESS_DROPPED = """
local now = redis.call('GET', KEYS[1]) or ''
if now ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if KEYS[3] then redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[3]) end
return 1
"""


class _Redis:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.store = client.register_script(_STORE)
        self.drop = client.register_script(_FORGET)
        self.drop_many = client.register_script(_FORGET_MANY)
        self.store_key = client.register_script(_STORE_UNLESS_DROPPED)

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
        self,
        device_pk: int,
        oldest: datetime | None,
        newest: datetime | None,
        also: Sequence[str],
    ) -> int:
        try:
            return int(self._drop((device_pk, oldest, newest, also, None))[0])
        except RedisError:
            logger.warning("cache unreachable: series answers not dropped", exc_info=True)
            return 0

    @staticmethod
    def _lifetime() -> int:
        # Longer than any fill takes: a fill that saw the old generation must not find
        # the key gone (and take "none" for unchanged).
        return max(settings.SERIES_CACHE_TTL_S, settings.CACHE_TTL_S, 1) * 2

    def _drop_params(self, item: Touched, take: bool = False) -> tuple[list[str], list[Any]]:
        device_pk, oldest, newest, also, guarded = item
        generation, index = self._names(device_pk)
        mode = "take" if take else ""
        if guarded is not None:
            also, mode = [*guarded, *also], "guarded"
        keys = [generation, index, *(cache.make_key(key) for key in also)]
        span: list[int | str] = (
            ["", ""] if oldest is None or newest is None else [_us(oldest), _us(newest)]
        )
        return keys, [*span, self._lifetime(), mode]

    def _drop(self, item: Touched, take: bool = False) -> Any:
        keys, args = self._drop_params(item, take)
        return self.drop(keys=keys, args=args)

    def forget_many(self, touched: Sequence[Touched]) -> list[Forgotten]:
        try:
            if len(touched) == 1:
                results = [self._drop(touched[0])]
            else:
                results = []
                for start in range(0, len(touched), _DROPS_PER_SCRIPT):
                    results += self._drop_some(touched[start : start + _DROPS_PER_SCRIPT])
        except RedisError:
            # Then the answers expire within the TTL: stale that long at most.
            logger.warning("cache unreachable: series answers not dropped", exc_info=True)
            return []
        return [
            (item[0], str(result[1]).encode(), bool(result[3]))
            for item, result in zip(touched, results, strict=True)
        ]

    def _drop_some(self, touched: Sequence[Touched]) -> list[Any]:
        keys: list[str] = []
        args: list[Any] = []
        for item in touched:
            its_keys, its_args = self._drop_params(item)
            keys += its_keys
            args += [len(its_keys), *its_args]
        return list(self.drop_many(keys=keys, args=args))

    def forget_taking(
        self, device_pk: int, oldest: datetime, newest: datetime, key: str, also: Sequence[str]
    ) -> tuple[Any, Generation | None]:
        try:
            _, generation, taken, _ = self._drop(
                (device_pk, oldest, newest, [key, *also], None), take=True
            )
        except RedisError:
            logger.warning("cache unreachable: cached answers not dropped", exc_info=True)
            return None, None
        # A missing key comes back as nil (RESP2) or false (RESP3).
        value = cache.client.decode(taken) if isinstance(taken, bytes) else None  # type: ignore[attr-defined]  # django-redis, untyped
        return value, str(generation).encode()

    def generation(self, device_pk: int) -> Generation | None:
        try:
            seen = self.client.get(self._names(device_pk)[0])
        except RedisError:
            logger.warning("cache unreachable: answer computed without it", exc_info=True)
            return None
        return b"" if seen is None else bytes(seen)

    def store_unless_dropped(
        self,
        device_pk: int,
        key: str,
        value: Any,
        ttl: int,
        seen: Generation,
        guard: tuple[str, str] | None,
    ) -> bool:
        encoded = cache.client.encode(value)  # type: ignore[attr-defined]  # django-redis, untyped
        keys = [self._names(device_pk)[0], cache.make_key(key)]
        args = [seen, encoded, ttl]
        if guard is not None:
            keys.append(cache.make_key(guard[0]))
            args.append(guard[1])
        try:
            stored = self.store_key(keys=keys, args=args)
        except RedisError:
            logger.warning("cache unreachable: answer not stored", exc_info=True)
            return False
        return bool(stored)


# --- local memory: one process ----------------------------------------------------------


class _Local:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        # key -> (expires at, device, dependence, answer), oldest first.
        self.entries: OrderedDict[str, tuple[float, int, Dependence, bytes]] = OrderedDict()
        self.generations: dict[int, int] = {}
        # A guard's key -> its span_guard.
        self.guards: dict[str, str] = {}

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
        self,
        device_pk: int,
        oldest: datetime | None,
        newest: datetime | None,
        also: Sequence[str],
        guarded: Guarded | None = None,
    ) -> int:
        return self._forget((device_pk, oldest, newest, also, guarded))[0]

    def _forget(self, item: Touched) -> tuple[int, bool]:
        """Series answers dropped, and whether the guarded key was there and dropped."""
        device_pk, oldest, newest, also, guarded = item
        guarded_dropped = False
        if guarded is not None:
            key, guard_key = guarded
            with self.lock:
                guard = self.guards.get(guard_key)
            if guard is None or not _guard_holds(guard, oldest, newest):
                with self.lock:
                    had_guard = self.guards.pop(guard_key, None) is not None
                guarded_dropped = had_guard or cache.get(key) is not None
                also = [key, *also]
        with self.lock:
            # First: a fill that saw the old generation stores nothing after the drop.
            self.generations[device_pk] = self.generations.get(device_pk, 0) + 1
            touched = [
                key
                for key, (_, device, dependence, _) in self.entries.items()
                if device == device_pk
                and oldest is not None
                and newest is not None
                and dependence.touched_by(oldest, newest)
            ]
            for key in touched:
                del self.entries[key]
        if also:
            with self.lock:
                for key in also:
                    self.guards.pop(key, None)
            cache.delete_many(list(also))
        return len(touched), guarded_dropped

    def forget_many(self, touched: Sequence[Touched]) -> list[Forgotten]:
        forgotten: list[Forgotten] = []
        for item in touched:
            dropped = self._forget(item)[1]
            forgotten.append((item[0], self.generation(item[0]) or 0, dropped))
        return forgotten

    def forget_taking(
        self, device_pk: int, oldest: datetime, newest: datetime, key: str, also: Sequence[str]
    ) -> tuple[Any, Generation | None]:
        # One process's memory: nothing runs between the read and the drop that matters
        # more than it would with Redis (a fill that raced stores nothing: generation).
        taken = cache.get(key)
        self.forget(device_pk, oldest, newest, [key, *also])
        return taken, self.generation(device_pk)

    def generation(self, device_pk: int) -> Generation | None:
        with self.lock:
            return self.generations.get(device_pk, 0)

    def store_unless_dropped(
        self,
        device_pk: int,
        key: str,
        value: Any,
        ttl: int,
        seen: Generation,
        guard: tuple[str, str] | None,
    ) -> bool:
        with self.lock:
            if self.generations.get(device_pk, 0) != seen:
                return False
            cache.set(key, value, ttl)
            if guard is not None:
                self.guards[guard[0]] = guard[1]
        return True

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


def shared() -> bool:
    """Whether every process sees the same answers and drops (Redis), not only this
    one (its memory)."""
    return isinstance(_backend(), _Redis)


def clear_local() -> None:
    """Forget this process's in-memory answers (the cache is cleared between tests)."""
    for backend in _chosen.values():
        if isinstance(backend, _Local):
            backend.clear()
