"""GET /v1/realtime is served from the cache, recomputed on a miss, and keeps working
from the database when Redis is down."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from capacity.realtime import realtime_cache_key
from p1common.processes import run_server
from tests.conftest import bearer
from tests.samples import sample

pytestmark = pytest.mark.django_db(transaction=True)


def post(http, server, token, samples):
    response = http.post(
        f"{server.url}/v1/ingest", json={"samples": samples}, headers=bearer(token)
    )
    assert response.status_code == 200, response.text


def recent(seconds_ago: float, power_w: float) -> dict:
    ts = timezone.now() - timedelta(seconds=seconds_ago)
    return sample(ts, power_w=power_w, energy_import_kwh=5000 + (600 - seconds_ago) / 3600)


def test_answer_is_cached_and_replaced_after_ingest(http, device, private_redis):
    from telemetry.tokens import issue_token

    token = issue_token(device, "ingest,read")[1]
    with run_server(REDIS_URL=private_redis, CACHE_TTL_S="300") as srv:
        post(http, srv, token, [recent(20, 1000.0)])
        first = http.get(f"{srv.url}/v1/realtime", headers=bearer(token)).json()
        assert first["latest"]["power_w"] == 1000.0
        keys = redis.Redis.from_url(private_redis).keys("*realtime:home-p1*")
        assert keys, "the answer was not cached in Redis"
        post(http, srv, token, [recent(5, 2500.0)])
        assert not redis.Redis.from_url(private_redis).keys("*realtime:home-p1*")
        second = http.get(f"{srv.url}/v1/realtime", headers=bearer(token)).json()
        assert second["latest"]["power_w"] == 2500.0
        assert second["age_s"] < first["age_s"] + 60


def test_realtime_answers_from_the_database_while_redis_is_down(http, device, private_redis):
    from telemetry.tokens import issue_token

    token = issue_token(device, "ingest,read")[1]
    with run_server(REDIS_URL=private_redis) as srv:
        post(http, srv, token, [recent(30, 800.0)])
        redis.Redis.from_url(private_redis).shutdown(nosave=True)
        post(http, srv, token, [recent(3, 1800.0)])
        response = http.get(f"{srv.url}/v1/realtime", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert response.json()["latest"]["power_w"] == 1800.0


def test_cached_answer_is_used_without_recomputing(client, device, read_token):
    from django.core.cache import cache

    canned = {"device_id": device.device_id, "latest": None, "marker": "from-cache"}
    cache.set(realtime_cache_key(device.device_id), {"answer": canned, "basis": None}, 60)
    body = client.get("/v1/realtime", headers=bearer(read_token)).json()
    assert body["marker"] == "from-cache"


def test_a_capacity_rebuild_drops_the_cached_answer(client, device, read_token, settings):
    """The answer lives until its data changes; a new time zone (which rebuilds the
    device's capacity) changes it without any batch."""
    from telemetry import pipeline
    from telemetry.validation import validate_samples

    settings.CACHE_TTL_S = 3600
    columns, errors = validate_samples([recent(30, 900.0)], now=timezone.now())
    assert not errors
    pipeline.ingest_batch(device, columns)
    before = client.get("/v1/realtime", headers=bearer(read_token)).json()
    assert before["timezone"] == device.timezone

    device.timezone = "Asia/Tokyo" if device.timezone != "Asia/Tokyo" else "Europe/Brussels"
    device.save()
    after = client.get("/v1/realtime", headers=bearer(read_token)).json()
    assert after["timezone"] == device.timezone
