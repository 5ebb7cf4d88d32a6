"""Outages of real services, stopped and started inside the test, under a real server.

Redis down: ingest and reads still answer correctly from the database, /readyz says the
cache is down, bad tokens are still refused. PostgreSQL down: ingest and reads answer
503 problem+json with Retry-After, /readyz is not ready. Both recover while the same
server process keeps running: nothing restarts it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
import redis

from p1common.processes import database_url, run_server
from p1common.services import PrivatePostgres, PrivateRedis
from scripts.chaos import stack
from telemetry.models import Sample
from tests.conftest import bearer
from tests.hostile.helpers import assert_problem
from tests.samples import BASE_TS, sample
from tests.waiting import wait_until

RECOVERY_TIMEOUT_S = 60
READS = [
    "/v1/realtime",
    "/v1/devices",
    "/v1/series?interval=15m&start=2026-03-01&end=2026-03-02",
    "/v1/capacity/month/2026-03",
    "/v1/capacity/quarters?date=2026-03-01",
]


@pytest.fixture
def redis_server(private_redis_server: PrivateRedis) -> PrivateRedis:
    return private_redis_server


@pytest.fixture
def postgres_server(request: pytest.FixtureRequest) -> PrivatePostgres:
    if database_url().startswith("sqlite"):
        pytest.skip("needs PostgreSQL (this pass runs on SQLite)")
    return request.getfixturevalue("private_postgres")


def ingest(http: httpx.Client, url: str, token: str, minute: int) -> httpx.Response:
    batch = [sample(BASE_TS + timedelta(minutes=minute, seconds=s)) for s in range(0, 60, 10)]
    return http.post(f"{url}/v1/ingest", json={"samples": batch}, headers=bearer(token))


def readiness(http: httpx.Client, url: str) -> dict:
    response = http.get(f"{url}/readyz")
    return {"http_status": response.status_code, **response.json()}


@pytest.mark.django_db(transaction=True)
def test_redis_outage_degrades_to_the_database_and_recovers(
    http, device, redis_server, django_db_setup
):
    from telemetry.tokens import issue_token

    token = issue_token(device, "ingest,read")[1]
    with run_server(REDIS_URL=redis_server.url(), BAD_TOKEN_RATE="100/min") as srv:
        assert ingest(http, srv.url, token, 0).json()["inserted"] == 6
        assert http.get(f"{srv.url}/v1/realtime", headers=bearer(token)).status_code == 200
        assert readiness(http, srv.url)["cache"] == "ok"

        redis_server.stop()

        response = ingest(http, srv.url, token, 1)
        assert response.status_code == 200, response.text
        assert response.json() == {"received": 6, "inserted": 6, "duplicates": 0}
        realtime = http.get(f"{srv.url}/v1/realtime", headers=bearer(token))
        assert realtime.status_code == 200, realtime.text
        # The answer comes from the database, so it has the batch stored during the outage.
        newest = BASE_TS + timedelta(minutes=1, seconds=50)
        assert datetime.fromisoformat(realtime.json()["latest"]["ts"]) == newest
        for path in READS:
            answer = http.get(srv.url + path, headers=bearer(token))
            assert answer.status_code == 200, (path, answer.text)
        assert_problem(
            http.get(f"{srv.url}/v1/devices", headers=bearer("not-our-token-x" * 3)), 401
        )
        # Without a worker every request did its own steps: nothing is owed.
        assert readiness(http, srv.url) == {
            "http_status": 200,
            "status": "ready",
            "database": "ok",
            "cache": "down",
            "owed_steps_age_s": None,
        }

        redis_server.start()

        wait_until(
            lambda: readiness(http, srv.url)["cache"] == "ok", RECOVERY_TIMEOUT_S, "the cache back"
        )
        assert ingest(http, srv.url, token, 2).json()["inserted"] == 6
        assert http.get(f"{srv.url}/v1/realtime", headers=bearer(token)).status_code == 200
        # The cache is in use again: the realtime answer was stored in the new Redis.
        keys = redis.Redis.from_url(redis_server.url()).keys("*realtime*")
        assert keys, "nothing was cached after Redis came back"
    assert Sample.objects.filter(device=device).count() == 18


def manage(database: str, *args: str) -> str:
    """manage.py in a process of its own against ``database``, as the chaos run calls it
    (none of the suite's own settings leak in); returns its stdout."""
    return stack.manage(*args, env=stack.base_env(DATABASE_URL=database))


def test_postgres_outage_is_503_with_retry_after_and_recovers(http, postgres_server):
    database = postgres_server.create_database("p1outage")
    manage(database, "migrate", "--no-input", "-v", "0")
    manage(database, "create_device", "outage-p1")
    token = manage(database, "issue_token", "outage-p1", "--scopes", "ingest,read").split()[-1]
    # No Redis and no cached answers: every request needs the database.
    with run_server(DATABASE_URL=database, REDIS_URL=None, CACHE_TTL_S="0") as srv:
        assert ingest(http, srv.url, token, 0).status_code == 200
        for path in READS:
            assert http.get(srv.url + path, headers=bearer(token)).status_code == 200, path

        postgres_server.stop()

        response = ingest(http, srv.url, token, 1)
        body = assert_problem(response, 503)
        assert "database" in body["detail"].lower()
        assert int(response.headers["retry-after"]) > 0
        for path in READS:
            answer = http.get(srv.url + path, headers=bearer(token))
            assert_problem(answer, 503)
            assert int(answer.headers["retry-after"]) > 0
        ready = readiness(http, srv.url)
        assert (ready["http_status"], ready["status"], ready["database"]) == (
            503,
            "not ready",
            "down",
        )

        postgres_server.start()

        wait_until(
            lambda: readiness(http, srv.url)["http_status"] == 200,
            RECOVERY_TIMEOUT_S,
            "ready again",
        )
        response = ingest(http, srv.url, token, 1)
        assert response.status_code == 200, response.text
        assert response.json()["inserted"] == 6, "the refused batch must not have been stored"
        for path in READS:
            assert http.get(srv.url + path, headers=bearer(token)).status_code == 200, path
