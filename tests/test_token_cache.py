"""Token lookups shared through Redis: each token costs one database read however many
server processes check it, and a revocation still reaches every one at once."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from telemetry import token_cache
from telemetry.models import DeviceToken
from telemetry.tokens import issue_token

pytestmark = pytest.mark.django_db

needs_redis = pytest.mark.skipif(
    not settings.TOKEN_CACHE_TTL_S, reason="tokens are cached only with Redis (REDIS_URL)"
)


def another_process() -> None:
    """What a second server process knows of tokens: nothing of its own yet."""
    with token_cache._lock:
        token_cache._entries.clear()


@needs_redis
def test_a_token_one_process_read_costs_the_next_process_no_database_read(
    device, django_assert_num_queries
):
    token, raw = issue_token(device, "ingest")
    first = token_cache.lookup(raw, record_use=False)
    assert first.token is not None and first.token.pk == token.pk
    another_process()
    with django_assert_num_queries(0):
        found = token_cache.lookup(raw, record_use=False)
    assert found.token is not None and found.token.pk == token.pk
    assert found.token.device.device_id == device.device_id


@needs_redis
def test_a_revoked_token_is_not_taken_from_another_process_copy(device):
    token, raw = issue_token(device, "ingest")
    assert token_cache.lookup(raw, record_use=False).token is not None
    token.revoke()
    another_process()
    assert token_cache.lookup(raw, record_use=False).token is None


@needs_redis
def test_the_shared_copy_is_keyed_by_the_hash_never_the_token(device):
    from django.core.cache import cache

    _, raw = issue_token(device, "ingest")
    token_cache.lookup(raw, record_use=False)
    key = f"{token_cache.SHARED_PREFIX}{token_cache.hash_token(raw)}"
    assert cache.get(key) is not None
    assert cache.get(f"{token_cache.SHARED_PREFIX}{raw}") is None


@needs_redis
@pytest.mark.django_db(transaction=True)
def test_a_token_change_inside_a_transaction_moves_the_generation_again_at_its_commit(device):
    from django.core.cache import cache
    from django.db import transaction

    token, _ = issue_token(device, "ingest")
    with transaction.atomic():
        token.revoke()
        # A lookup now still reads the active row from the database...
        seen_inside = cache.get(token_cache.GENERATION_KEY)
    # ...so the copy it left under this generation must not be trusted after the commit.
    assert cache.get(token_cache.GENERATION_KEY) != seen_inside


def stale_copy(raw: str) -> None:
    """This process's copy of the token, last used long enough ago to record a use."""
    with token_cache._lock:
        entry = token_cache._entries[token_cache.hash_token(raw)]
    entry.token.last_used_at = None


def deferred_uses() -> dict[bytes, bytes]:
    from django.core.cache import cache

    return token_cache._redis_client().hgetall(cache.make_key(token_cache.USES_KEY))


@needs_redis
@override_settings(INGEST_STEPS_WORKER=True)
def test_with_the_worker_a_read_leaves_its_token_use_in_redis_and_writes_nothing(
    device, django_assert_num_queries
):
    token, raw = issue_token(device, "read")
    token_cache.lookup(raw, record_use=False)
    stale_copy(raw)
    with django_assert_num_queries(0):
        found = token_cache.lookup(raw)
    assert found.token is not None and found.token.last_used_at is not None
    assert list(deferred_uses()) == [str(token.pk).encode()]
    assert DeviceToken.objects.get(pk=token.pk).last_used_at is None
    # Within the minute the same process records nothing again.
    token_cache.forget_written(deferred_uses())
    token_cache.lookup(raw)
    assert deferred_uses() == {}


@needs_redis
@override_settings(INGEST_STEPS_WORKER=True)
def test_the_worker_cycle_writes_the_uses_reads_left_and_clears_them(device):
    token, raw = issue_token(device, "read")
    token_cache.lookup(raw, record_use=False)
    stale_copy(raw)
    token_cache.lookup(raw)
    used = token_cache._entries[token_cache.hash_token(raw)].token.last_used_at

    call_command("run_ingest_steps", "--once")

    assert DeviceToken.objects.get(pk=token.pk).last_used_at == used
    assert deferred_uses() == {}
    assert token_cache.write_deferred_uses() == 0


@needs_redis
@override_settings(INGEST_STEPS_WORKER=True)
def test_a_use_recorded_while_the_worker_wrote_stays_for_its_next_cycle(device):
    from django.core.cache import cache

    token, _ = issue_token(device, "read")
    client = token_cache._redis_client()
    key = cache.make_key(token_cache.USES_KEY)
    client.hset(key, str(token.pk), "2026-12-04T10:00:00+00:00")
    taken = deferred_uses()
    client.hset(key, str(token.pk), "2026-12-04T10:01:00+00:00")  # a read meanwhile

    token_cache.forget_written(taken)

    assert deferred_uses() == {str(token.pk).encode(): b"2026-12-04T10:01:00+00:00"}


@pytest.mark.django_db(transaction=True)
@override_settings(INGEST_STEPS_WORKER=False)
def test_without_the_worker_a_read_writes_its_token_use_itself(device):
    token, raw = issue_token(device, "read")
    token_cache.lookup(raw, record_use=False)
    if settings.TOKEN_CACHE_TTL_S:
        stale_copy(raw)
    with CaptureQueriesContext(connection) as queries:
        token_cache.lookup(raw)
    assert any(q["sql"].startswith("UPDATE") for q in queries.captured_queries)
    assert DeviceToken.objects.get(pk=token.pk).last_used_at is not None
    if settings.TOKEN_CACHE_TTL_S:
        assert deferred_uses() == {}
