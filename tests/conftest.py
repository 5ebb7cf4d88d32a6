from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import httpx
import pytest

from p1common.processes import ServerProcess, run_server
from p1common.services import PrivatePostgres, PrivateRedis, ServiceMissing
from tests.tools import tool_missing

HTTP_TIMEOUT_S = 30


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> Iterator[None]:
    """Django's PBKDF2 (1,000,000 iterations) costs 0.7 s a user on this machine and the
    suite creates hundreds of users. Users who log in through a live server process keep
    the production hasher (see tests/browser/conftest.py): the server cannot read MD5."""
    from django.conf import settings
    from django.test import override_settings

    fast = ["django.contrib.auth.hashers.MD5PasswordHasher", *settings.PASSWORD_HASHERS]
    with override_settings(PASSWORD_HASHERS=fast):
        yield


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    """Throttle counters and cached answers must not leak from one test to the next.

    The test command points REDIS_URL at a database of its own, so this clears nothing
    a running server needs.
    """
    from django.core.cache import cache

    from telemetry import series_cache

    cache.clear()
    series_cache.clear_local()


@pytest.fixture(scope="session")
def server(django_db_setup) -> Iterator[ServerProcess]:
    """One gunicorn process on the test database, shared by the session's tests."""
    with run_server(INGEST_THROTTLE_RATE="off", BAD_TOKEN_RATE="off") as proc:
        yield proc


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
        yield client


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("owner", password="owner-password-1")


@pytest.fixture
def device(owner):
    from telemetry.models import Device

    return Device.objects.create(device_id="home-p1", name="Home", owner=owner)


@pytest.fixture
def other_device(django_user_model):
    from telemetry.models import Device

    neighbour = django_user_model.objects.create_user("neighbour", password="neighbour-pw-1")
    return Device.objects.create(device_id="next-door", owner=neighbour)


def _token(device, scopes: str) -> str:
    from telemetry.tokens import issue_token

    return issue_token(device, scopes)[1]


@pytest.fixture
def ingest_token(device) -> str:
    return _token(device, "ingest")


@pytest.fixture
def read_token(device) -> str:
    return _token(device, "read")


@pytest.fixture
def other_ingest_token(other_device) -> str:
    return _token(other_device, "ingest")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


Service = TypeVar("Service", PrivateRedis, PrivatePostgres)


def _private(service_class: type[Service]) -> Service:
    """The service started for one test; the test skips (or fails under
    TESTS_REQUIRE_TOOLS) when its server is not installed."""
    try:
        service = service_class()
    except ServiceMissing as exc:
        tool_missing(str(exc))
    return service


@pytest.fixture
def private_redis_server() -> Iterator[PrivateRedis]:
    """A Redis server of the test's own, so a test may stop it without harming others."""
    with _private(PrivateRedis) as service:
        yield service


@pytest.fixture
def private_redis(private_redis_server: PrivateRedis) -> str:
    return private_redis_server.url()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the test's own (initdb in a temporary directory)."""
    with _private(PrivatePostgres) as service:
        yield service
