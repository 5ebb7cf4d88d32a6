"""Token lookups shared through Redis: each token costs one database read however many
server processes check it, and a revocation still reaches every one at once."""

from __future__ import annotations

import pytest
from django.conf import settings

from telemetry import token_cache
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
