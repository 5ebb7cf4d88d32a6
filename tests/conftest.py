from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TypeVar

import httpx
import pytest

from p1common.processes import ServerProcess, run_server
from p1common.services import PrivatePostgres, PrivateRedis, ServiceMissing
from tests.tools import tool_missing

HTTP_TIMEOUT_S = 30

# scripts/test.sh runs the suite twice, side by side on two cores: on PostgreSQL + Redis
# (TEST_PASS=postgres) and on SQLite + local memory (TEST_PASS=sqlite). Tests whose
# subject does not depend on the storage plan or the cache run in one pass only, to keep
# CI in its time budget; the storage-plan suites (tests/storage, ingest, capacity) cover
# what each plan does with a batch. Without TEST_PASS (a plain `pytest`), all run.
ONE_PASS_ONLY = {
    # The edge against a real server: what it proves is the edge's (spool, retries,
    # meter profiles, signals); the server's storing of a batch is each plan's own suite.
    "tests/edge_pipeline/": "sqlite",
    # No server database at all, or only the dashboard's pages in a browser.
    "tests/edge/": "postgres",
    "tests/browser/": "postgres",
    "tests/test_deploy_files.py": "postgres",
    "tests/test_requirement_locks.py": "postgres",
    "tests/test_type_check_config.py": "postgres",
    "tests/test_edge_role.py": "postgres",
    "tests/test_dashboard_static.py": "postgres",
    # The docs' snippets: plan-independent, but the Grafana SQL needs PostgreSQL.
    "tests/integrations/test_integrations_docs.py": "postgres",
    # The publisher's broker side (discovery, reconnect, TLS); what it reads is the
    # answers every plan's own suite checks.
    "tests/integrations/test_mqtt.py": "postgres",
    # Start-up against a missing database, and scripts/serve.sh on a SQLite file of its own.
    "tests/test_startup.py": "postgres",
    # Pure functions and rules, the source and docs, the error shape and the pages:
    # nothing in them reaches a storage plan's own SQL.
    "tests/test_validation.py": "sqlite",
    "tests/test_chaos_accounting.py": "sqlite",
    "tests/test_architecture.py": "sqlite",
    "tests/test_readme.py": "sqlite",
    "tests/test_child_processes.py": "sqlite",
    "tests/test_logfilters.py": "sqlite",
    "tests/test_problems.py": "sqlite",
    "tests/test_dashboard.py": "sqlite",
    "tests/test_admin.py": "sqlite",
    "tests/test_admin_quarantine.py": "sqlite",
    # Operator commands and provisioning at start, the schema and its fuzz (where a
    # database's own refusals would show as server errors, on the production engine).
    "tests/test_settings_and_commands.py": "postgres",
    "tests/test_device_tokens.py": "postgres",
    "tests/test_demo_bootstrap.py": "postgres",
    "tests/test_openapi.py": "postgres",
    "tests/test_schema_fuzz.py": "postgres",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    this_pass = os.environ.get("TEST_PASS", "")
    if not this_pass:
        return
    if this_pass not in {"postgres", "sqlite"}:
        raise pytest.UsageError(f"TEST_PASS must be postgres or sqlite, not {this_pass!r}")
    keep, elsewhere = [], []
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        owner = next((p for prefix, p in ONE_PASS_ONLY.items() if path.startswith(prefix)), None)
        (elsewhere if owner not in (None, this_pass) else keep).append(item)
    if elsewhere:
        config.hook.pytest_deselected(items=elsewhere)
        items[:] = keep


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
