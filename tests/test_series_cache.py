"""Cached series answers (issue 17, point 2), on a real Redis: a stored batch drops
exactly the answers whose range it touches, in both directions (a backlog for last
March leaves today's answer; today's batch leaves March's), and every answer left
standing still equals a fresh computation.

The PostgreSQL pass uses its own Redis database (REDIS_URL); the SQLite pass starts a
Redis of its own. The local-memory fallback has a test of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import TestCase, override_settings
from django.utils import timezone

from telemetry import series_cache
from telemetry.pipeline import ingest_batch
from telemetry.series import Dependence, outer_bounds
from telemetry.tokens import issue_token
from telemetry.validation import validate_samples
from tests.conftest import bearer
from tests.samples import sample

pytestmark = pytest.mark.django_db

MARCH = datetime(2026, 3, 1, tzinfo=UTC)


def readings(first: datetime, count: int, step: timedelta, register: float = 100.0) -> list:
    return [
        sample(first + i * step, power_w=1200.0, energy_import_kwh=register + i * 0.01)
        for i in range(count)
    ]


def store(device, samples: list[dict]) -> None:
    """Ingest a batch; its on-commit work runs as after a real commit (the test's own
    transaction never commits)."""
    columns, errors = validate_samples(samples, now=timezone.now())
    assert not errors
    with TestCase.captureOnCommitCallbacks(execute=True):
        ingest_batch(device, columns)


@pytest.fixture
def redis_cache(request) -> Iterator[str]:
    """The default cache on a real Redis, for the test."""
    if settings.REDIS_URL:
        yield settings.REDIS_URL
        return
    url = request.getfixturevalue("private_redis")
    config = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": url,
        "KEY_PREFIX": "p1",
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
    }
    with override_settings(CACHES={"default": config}):
        yield url


@pytest.fixture
def history(device):
    """March 1-4 and 8-10 every 10 minutes (a gap between), and the last two hours."""
    store(device, readings(MARCH, 4 * 144, timedelta(minutes=10)))
    store(device, readings(MARCH + timedelta(days=7), 3 * 144, timedelta(minutes=10), 120.0))
    now = timezone.now().replace(microsecond=0)
    store(device, readings(now - timedelta(hours=2), 100, timedelta(minutes=1), 500.0))
    return now


@pytest.fixture
def ask(client, device):
    token = issue_token(device, "read")[1]

    def get(interval: str, start: str, end: str | None = None) -> dict:
        params = {"device_id": device.device_id, "interval": interval, "start": start}
        if end:
            params["end"] = end
        response = client.get("/v1/series", params, headers=bearer(token))
        assert response.status_code == 200, response.content
        return response.json()

    return get


def key_of(device, answer: dict) -> str:
    start, end = (datetime.fromisoformat(answer[k]) for k in ("start", "end"))
    interval = answer["interval"]
    first, last = outer_bounds(interval, start, end, ZoneInfo(device.timezone))
    return series_cache.answer_key(device, interval, first, last)


def cached(device, answer: dict) -> bool:
    key = key_of(device, answer)
    client = cache.client.get_client(write=True)  # type: ignore[attr-defined]  # django-redis
    return bool(client.exists(cache.make_key(key)))


def test_a_backlog_batch_for_march_drops_march_and_leaves_today(redis_cache, device, history, ask):
    today = ask("15m", (history - timedelta(hours=3)).isoformat())
    march = ask("1d", "2026-03-01", "2026-03-05")
    after_gap = ask("1d", "2026-03-09", "2026-03-11")
    assert cached(device, today) and cached(device, march) and cached(device, after_gap)

    # A backlog reaching into March 3 (inside the answer's range, beside stored samples).
    store(device, readings(MARCH + timedelta(days=2, minutes=5), 6, timedelta(minutes=10), 102.885))

    assert not cached(device, march)
    assert cached(device, today) and cached(device, after_gap)
    assert ask("15m", (history - timedelta(hours=3)).isoformat())["buckets"] == today["buckets"]
    fresh = ask("1d", "2026-03-01", "2026-03-05")
    counts = [sum(b["sample_count"] for b in a["buckets"]) for a in (march, fresh)]
    assert counts[1] == counts[0] + 6


def test_todays_batch_drops_todays_answer_and_leaves_last_years(redis_cache, device, history, ask):
    today = ask("15m", (history - timedelta(hours=3)).isoformat())
    march = ask("1mo", "2026-03-01", "2026-04-01")
    assert cached(device, today) and cached(device, march)

    store(device, readings(history - timedelta(minutes=15), 5, timedelta(seconds=10), 501.0))

    assert not cached(device, today) and cached(device, march)
    assert ask("1mo", "2026-03-01", "2026-04-01") == march
    fresh = ask("15m", (history - timedelta(hours=3)).isoformat())
    assert sum(b["sample_count"] for b in fresh["buckets"]) == 105


def test_a_batch_in_the_gap_beside_a_range_drops_it_and_one_beyond_the_neighbours_does_not(
    redis_cache, device, history, ask
):
    # Range March 1-6: its last bucket's end is interpolated towards March 8's first
    # sample, so a sample on March 6 or 7 changes it; one on March 9 cannot.
    before_gap = ask("1d", "2026-03-01", "2026-03-06")
    store(device, readings(MARCH + timedelta(days=8, minutes=5), 1, timedelta(minutes=1), 127.0))
    assert cached(device, before_gap)
    assert ask("1d", "2026-03-01", "2026-03-06") == before_gap

    store(device, readings(MARCH + timedelta(days=6, hours=12), 1, timedelta(minutes=1), 112.0))
    assert not cached(device, before_gap)
    assert ask("1d", "2026-03-01", "2026-03-06") != before_gap


def test_every_answer_left_standing_equals_a_fresh_one(redis_cache, device, history, ask):
    ranges = [
        ("1h", "2026-03-01", "2026-03-03"),
        ("1d", "2026-02-20", "2026-03-20"),
        ("1w", "2026-02-01", "2026-04-01"),
        ("15m", "2026-03-04", "2026-03-05"),
        ("1d", "2026-03-05", "2026-03-08"),  # inside the gap: no bucket
    ]
    backlogs = [MARCH + timedelta(days=d, minutes=3) for d in (0.5, 3.99, 5, 7.5, 9.5)]
    for moment in backlogs:
        answers = [ask(*r) for r in ranges]
        store(device, readings(moment, 2, timedelta(minutes=2), 150.0))
        standing = [(r, a) for r, a in zip(ranges, answers, strict=True) if cached(device, a)]
        with override_settings(SERIES_CACHE_TTL_S=0):
            for r, a in standing:
                assert ask(*r) == a, (moment, r)


def test_an_answer_expires_within_the_ttl(redis_cache, device, history, ask):
    with override_settings(SERIES_CACHE_TTL_S=7):
        key = cache.make_key(key_of(device, ask("1d", "2026-03-01", "2026-03-05")))
        client = cache.client.get_client(write=True)  # type: ignore[attr-defined]  # django-redis
        assert 0 < client.ttl(key) <= 7


def test_an_answer_computed_while_a_batch_was_stored_is_not_kept(redis_cache, device):
    key = series_cache.answer_key(device, "1d", MARCH, MARCH + timedelta(days=1))

    def compute_while_a_batch_lands() -> tuple[bytes, Dependence]:
        series_cache.forget_touched(device.pk, MARCH, MARCH)  # a batch's drop, meanwhile
        return orjson.dumps([{"old": True}]), Dependence(MARCH, MARCH + timedelta(days=1))

    assert series_cache.cached_series(device.pk, key, compute_while_a_batch_lands)
    client = cache.client.get_client(write=True)  # type: ignore[attr-defined]  # django-redis
    assert not client.exists(cache.make_key(key))


@override_settings(INGEST_STEPS_WORKER=True)
def test_with_the_worker_the_batch_drops_the_answer_in_its_own_request(
    redis_cache, device, history, ask
):
    today = ask("15m", (history - timedelta(hours=3)).isoformat())
    store(device, readings(history - timedelta(minutes=15), 5, timedelta(seconds=10), 501.0))
    assert not cached(device, today)  # before any worker ran


def test_redis_down_answers_without_the_cache(device):
    down = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
    key = series_cache.answer_key(device, "1d", MARCH, MARCH + timedelta(days=1))
    with override_settings(CACHES={"default": down}):
        answer = series_cache.cached_series(
            device.pk, key, lambda: (orjson.dumps([{"fresh": True}]), Dependence(None, None))
        )
        assert orjson.loads(answer) == [{"fresh": True}]
        assert series_cache.forget_touched(device.pk, MARCH, MARCH) == 0


LOCAL = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@override_settings(CACHES=LOCAL)
def test_without_redis_each_process_drops_exactly_the_touched_answers_it_holds(device):
    computed = []

    def answer(name: str, first: datetime, last: datetime | None) -> bytes:
        def compute() -> tuple[bytes, Dependence]:
            computed.append(name)
            return orjson.dumps([{"answer": name}]), Dependence(first, last)

        return series_cache.cached_series(device.pk, f"k:{name}", compute)

    march = ("march", MARCH, MARCH + timedelta(days=4))
    today = ("today", MARCH + timedelta(days=200), None)
    for _ in range(2):
        answer(*march), answer(*today)
    assert computed == ["march", "today"]  # then served from memory

    backlog = MARCH + timedelta(days=1)
    assert series_cache.forget_touched(device.pk, backlog, backlog) == 1
    answer(*march), answer(*today)
    assert computed == ["march", "today", "march"]


def test_the_series_json_is_what_drfs_renderer_writes_and_the_browsable_api_still_works(
    device, history, ask, client
):
    from rest_framework.renderers import JSONRenderer

    from telemetry.renderers import AnswerJSONRenderer

    answer = ask("1h", "2026-03-01", "2026-03-12")  # cached, then rendered from the cache
    assert ask("1h", "2026-03-01", "2026-03-12")["buckets"] == answer["buckets"]
    assert AnswerJSONRenderer().render(answer) == JSONRenderer().render(answer)
    token = issue_token(device, "read")[1]
    page = client.get(
        "/v1/series",
        {"device_id": device.device_id, "interval": "1d", "start": "2026-03-01"},
        headers={**bearer(token), "Accept": "text/html"},
    )
    assert page.status_code == 200 and b"sample_count" in page.content


def test_a_capacity_rebuild_drops_the_devices_cached_answers(redis_cache, device, history, ask):
    """A rebuild rewrites the register breaks, which every answer's registers go through."""
    from capacity.materialize import rebuild

    march = ask("1d", "2026-03-01", "2026-03-05")
    today = ask("15m", (history - timedelta(hours=3)).isoformat())
    assert cached(device, march) and cached(device, today)
    rebuild(device.pk)
    assert not cached(device, march) and not cached(device, today)


@pytest.mark.parametrize("local", [False, True], ids=["redis", "local memory"])
def test_one_drop_for_many_devices_does_for_each_what_its_own_drop_does(
    request, django_capture_on_commit_callbacks, local
):
    """The worker drops a chunk's answers in one call; per device it must be what that
    device's own drop is: series answers its span reaches go, others stay; its other
    keys go; a guarded key stays where the span lies within its guard, and goes, with
    the device named for a refill, where it does not."""
    if local:
        memory = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
        request.getfixturevalue("settings").CACHES = memory
    else:
        request.getfixturevalue("redis_cache")
    assert series_cache.shared() is not local
    noon = datetime(2026, 11, 4, 12, tzinfo=UTC)
    minute = timedelta(minutes=1)

    def series(device_pk: int, key: str, first: datetime, last: datetime) -> None:
        series_cache.cached_series(device_pk, key, lambda: (b"[]", Dependence(first, last)))

    def guarded_answer(device_pk: int) -> None:
        seen = series_cache.generation(device_pk)
        assert seen is not None
        guard = (
            f"guard:{device_pk}",
            series_cache.span_guard(noon, noon + 15 * minute, noon + 5 * minute),
        )
        assert series_cache.store_unless_dropped(
            device_pk, f"answer:{device_pk}", "cached", 60, seen, guard
        )

    kept, dropped_guard, plain = 9101, 9102, 9103
    for pk in (kept, dropped_guard, plain):
        series(pk, f"reached:{pk}", noon - 10 * minute, noon + 10 * minute)
        series(pk, f"earlier:{pk}", noon - 60 * minute, noon - 30 * minute)
        guarded_answer(pk)
        cache.set(f"other:{pk}", "stale", 60)
    before = {pk: series_cache.generation(pk) for pk in (kept, dropped_guard, plain)}

    def batch(pk: int, oldest: datetime, newest: datetime):
        from telemetry.pipeline import StoredBatch

        return StoredBatch(pk, f"home-{pk}", "Europe/Brussels", oldest, newest, 5)

    batches = [
        batch(kept, noon + 2 * minute, noon + 3 * minute),  # within the guard
        batch(dropped_guard, noon + 6 * minute, noon + 7 * minute),  # after what it covers
        batch(plain, noon + 2 * minute, noon + 3 * minute),
    ]
    refilled: list[dict] = []
    with django_capture_on_commit_callbacks(execute=True):
        series_cache.forget_after_batches(
            batches,
            also=lambda b: [f"other:{b.device_pk}"],
            guarded=lambda b: (
                None if b.device_pk == plain else (f"answer:{b.device_pk}", f"guard:{b.device_pk}")
            ),
            refill=refilled.append,
        )

    def has_series(pk: int, key: str) -> bool:
        hits: list[int] = []
        series_cache.cached_series(
            pk, key, lambda: (hits.append(1) or b"[]", Dependence(None, None))
        )
        return not hits

    for pk in (kept, dropped_guard, plain):
        assert not has_series(pk, f"reached:{pk}"), pk
        assert has_series(pk, f"earlier:{pk}"), pk
        assert cache.get(f"other:{pk}") is None, pk
        assert series_cache.generation(pk) != before[pk], pk
    assert cache.get(f"answer:{kept}") == "cached"
    assert cache.get(f"answer:{dropped_guard}") is None
    assert cache.get(f"answer:{plain}") == "cached"  # not guarded here: not dropped
    assert [set(r) for r in refilled] == [{dropped_guard}]
    assert refilled[0][dropped_guard] == series_cache.generation(dropped_guard)


def test_a_chunk_of_more_devices_than_one_script_takes_drops_each_in_order(
    request, django_capture_on_commit_callbacks
):
    """Redis runs one script at a time, so a worker chunk's drops go in several; each
    device's answer must still go, and each refill see its own generation."""
    request.getfixturevalue("redis_cache")
    noon = datetime(2026, 11, 4, 12, tzinfo=UTC)
    minute = timedelta(minutes=1)
    devices = list(range(9200, 9200 + 2 * series_cache._DROPS_PER_SCRIPT + 5))
    for pk in devices:
        series_cache.cached_series(
            pk, f"reached:{pk}", lambda: (b"[]", Dependence(noon - minute, noon + minute))
        )
        seen = series_cache.generation(pk)
        assert seen is not None
        assert series_cache.store_unless_dropped(pk, f"answer:{pk}", "cached", 60, seen, None)

    from telemetry.pipeline import StoredBatch

    batches = [
        StoredBatch(pk, f"home-{pk}", "Europe/Brussels", noon, noon + minute, 5) for pk in devices
    ]
    refilled: list[dict] = []
    with django_capture_on_commit_callbacks(execute=True):
        series_cache.forget_after_batches(
            batches,
            guarded=lambda b: (f"answer:{b.device_pk}", f"guard:{b.device_pk}"),
            refill=refilled.append,
        )

    for pk in devices:
        assert cache.get(f"answer:{pk}") is None, pk
    assert list(refilled[0]) == devices
    assert all(refilled[0][pk] == series_cache.generation(pk) for pk in devices)
