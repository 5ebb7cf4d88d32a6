"""Reads from a real PostgreSQL streaming replica, started here with pg_basebackup.

The history and capacity answers come from the replica; ingest, token and device checks
and realtime stay on the primary. Pausing the replica's replay makes the difference
visible: what was ingested meanwhile is missing from the replica's answers, while
ingest, a token issued a moment ago and a token revoked a moment ago behave at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
import pytest
from django.conf import settings
from django.db import transaction

from p1common.processes import ServerProcess, database_url, run_server
from p1common.replica import REPLICA_ALIAS, reads_from, replica_reads
from p1common.services import PrivatePostgres, PrivateReplica, ServiceFailed, ServiceMissing
from p1platform.dbrouter import ReplicaRouter
from scripts.chaos import stack
from telemetry.models import DeviceToken, Sample
from tests.conftest import bearer
from tests.samples import BASE_TS, sample
from tests.test_settings_and_commands import manage as manage_check
from tests.tools import tool_missing
from tests.waiting import wait_until

SERIES = "/v1/series?interval=15m&start=2026-03-01&end=2026-03-02"
QUARTERS = "/v1/capacity/quarters?date=2026-03-01"
PRIMARY = "postgres://postgres@127.0.0.1:5432/p1replica_never_opened"


# -- the setting ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"DATABASE_URL": PRIMARY, "DATABASE_REPLICA_URL": "mysql://db/p1"}, "not PostgreSQL"),
        ({"DATABASE_URL": PRIMARY, "DATABASE_REPLICA_URL": "postgres://db:99999/p1"}, "bad port"),
        ({"DATABASE_URL": PRIMARY, "DATABASE_REPLICA_URL": "postgres://db/"}, "no database"),
        ({"DATABASE_URL": PRIMARY, "DATABASE_REPLICA_URL": "sqlite:///x.db"}, "not PostgreSQL"),
        ({"DATABASE_URL": None, "DATABASE_REPLICA_URL": "postgres://db/p1"}, "SQLite primary"),
        (
            {"DATABASE_URL": "sqlite:///p.db", "DATABASE_REPLICA_URL": "postgres://db/p1"},
            "SQLite primary",
        ),
    ],
)
def test_a_bad_replica_url_stops_start_up_with_one_line_naming_it(env, why):
    result = manage_check("check", **env)
    assert result.returncode == 2, (why, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DATABASE_REPLICA_URL" in lines[0], why


def test_without_a_replica_url_there_is_one_database_and_reads_stay_on_it():
    assert list(settings.DATABASES) == ["default"]
    assert settings.DATABASE_ROUTERS == []
    with replica_reads() as alias:
        assert alias == "default"


@pytest.mark.django_db(transaction=True)
def test_the_router_reads_the_replica_only_where_chosen_and_never_tokens_or_in_a_transaction():
    router = ReplicaRouter()
    assert router.db_for_read(Sample) is None  # Django's own choice: the primary
    with reads_from(REPLICA_ALIAS):
        assert router.db_for_read(Sample) == REPLICA_ALIAS
        assert router.db_for_read(DeviceToken) == "default"
        assert router.db_for_write(Sample) == "default"
        with transaction.atomic():
            # Inside a transaction a read may need its own uncommitted rows.
            assert router.db_for_read(Sample) is None
        assert router.db_for_read(Sample) == REPLICA_ALIAS
    assert router.db_for_read(Sample) is None
    assert router.allow_migrate(REPLICA_ALIAS, "telemetry") is False
    assert router.allow_migrate("default", "telemetry") is True


# -- a real replica under a real server -------------------------------------------------


@dataclass
class Replicated:
    primary: PrivatePostgres
    replica: PrivateReplica
    database: str  # the primary's URL
    redis_url: str | None
    server: ServerProcess

    def manage(self, *args: str) -> str:
        """manage.py on the primary, with the server's cache (a revocation must reach
        the server's token generation)."""
        extra = {"REDIS_URL": self.redis_url} if self.redis_url else {}
        return stack.manage(*args, env=stack.base_env(DATABASE_URL=self.database, **extra))

    def device_with_token(self, device_id: str, scopes: str = "ingest,read") -> str:
        self.manage("create_device", device_id)
        return self.new_token(device_id, scopes)

    def new_token(self, device_id: str, scopes: str = "ingest,read") -> str:
        return self.manage("issue_token", device_id, "--scopes", scopes).split()[-1]

    def revoke(self, token: str) -> None:
        self.manage(
            "shell",
            "-c",
            "from telemetry.tokens import find_active_token; "
            f"find_active_token({token!r}).revoke()",
        )

    def count_on(self, server: PrivatePostgres, device_id: str) -> int:
        """Samples of the device as ``server`` (primary or replica) holds them now."""
        sql = (
            "SELECT count(*) FROM telemetry_sample s JOIN telemetry_device d "  # noqa: S608  # the tests' own device ids
            f"ON d.id = s.device_id WHERE d.device_id = '{device_id}'"
        )
        return int(server.query(sql, "p1replica"))


@pytest.fixture(scope="module")
def replicated() -> Iterator[Replicated]:
    """A primary, its replica streaming from it, the database migrated on the primary
    (the replica replays the migrations), and a server reading that replica."""
    if database_url().startswith("sqlite"):
        pytest.skip("needs PostgreSQL (this pass runs on SQLite)")
    try:
        primary = PrivatePostgres()
    except ServiceMissing as exc:
        tool_missing(str(exc))
    with primary:
        database = primary.create_database("p1replica")
        try:
            replica = PrivateReplica(primary)
        except ServiceMissing as exc:
            tool_missing(str(exc))
        with replica:
            redis_url = settings.REDIS_URL or None
            migrate = stack.base_env(DATABASE_URL=database)
            stack.manage("migrate", "--no-input", "-v", "0", env=migrate)
            replica.wait_for_replay()
            with run_server(
                DATABASE_URL=database,
                DATABASE_REPLICA_URL=replica.url("p1replica"),
                REDIS_URL=redis_url,
                # No cached answers: each read shows which database answered it.
                CACHE_TTL_S="0",
                INGEST_THROTTLE_RATE="off",
                BAD_TOKEN_RATE="off",
            ) as server:
                yield Replicated(primary, replica, database, redis_url, server)


def ingest(http: httpx.Client, url: str, token: str, minute: int) -> httpx.Response:
    batch = [sample(BASE_TS + timedelta(minutes=minute, seconds=s)) for s in range(0, 60, 10)]
    return http.post(f"{url}/v1/ingest", json={"samples": batch}, headers=bearer(token))


def get(http: httpx.Client, replicated: Replicated, path: str, token: str) -> dict:
    response = http.get(replicated.server.url + path, headers=bearer(token))
    assert response.status_code == 200, (path, response.text)
    return response.json()


def series_counts(http: httpx.Client, replicated: Replicated, token: str) -> list[int]:
    return [b["sample_count"] for b in get(http, replicated, SERIES, token)["buckets"]]


def quarters_with_data(http: httpx.Client, replicated: Replicated, token: str) -> list[str]:
    found = get(http, replicated, QUARTERS, token)["quarters"]
    return [q["start"] for q in found if q["sample_count"]]


def test_what_the_primary_commits_is_replayed_on_the_replica(replicated, http):
    token = replicated.device_with_token("replayed-p1")
    response = ingest(http, replicated.server.url, token, 0)
    assert response.json() == {"received": 6, "inserted": 6, "duplicates": 0}
    replicated.replica.wait_for_replay()
    assert replicated.count_on(replicated.replica, "replayed-p1") == 6
    assert replicated.count_on(replicated.primary, "replayed-p1") == 6
    # Why ingest must never reach it: the replica refuses every write.
    with pytest.raises(ServiceFailed, match="read-only transaction"):
        replicated.replica.query("DELETE FROM telemetry_sample", "p1replica")


def test_reads_come_from_the_replica_while_ingest_realtime_and_devices_use_the_primary(
    replicated, http
):
    token = replicated.device_with_token("lagging-p1")
    assert ingest(http, replicated.server.url, token, 0).json()["inserted"] == 6
    replicated.replica.wait_for_replay()
    assert series_counts(http, replicated, token) == [6]
    first_quarters = quarters_with_data(http, replicated, token)
    assert len(first_quarters) == 1

    replicated.replica.pause_replay()
    try:
        # A write sent to the replica would fail there (read-only): 500, not 200.
        later = ingest(http, replicated.server.url, token, 30)
        assert later.json() == {"received": 6, "inserted": 6, "duplicates": 0}
        assert replicated.count_on(replicated.primary, "lagging-p1") == 12
        assert replicated.count_on(replicated.replica, "lagging-p1") == 6

        # The replica has not replayed the second batch: its answers do not have it yet.
        assert series_counts(http, replicated, token) == [6]
        assert quarters_with_data(http, replicated, token) == first_quarters
        month = get(http, replicated, "/v1/capacity/month/2026-03", token)
        assert month["completeness"]["quarters_with_data"] == 1
        # Realtime and the device list come from the primary.
        realtime = get(http, replicated, "/v1/realtime", token)
        newest = BASE_TS + timedelta(minutes=30, seconds=50)
        assert datetime.fromisoformat(realtime["latest"]["ts"]) == newest
        devices = get(http, replicated, "/v1/devices", token)["devices"]
        assert [d["device_id"] for d in devices] == ["lagging-p1"]
    finally:
        replicated.replica.resume_replay()

    replicated.replica.wait_for_replay()
    assert series_counts(http, replicated, token) == [6, 6]
    assert len(quarters_with_data(http, replicated, token)) == 2
    month = get(http, replicated, "/v1/capacity/month/2026-03", token)
    assert month["completeness"]["quarters_with_data"] == 2


def test_a_token_issued_or_revoked_while_replay_is_paused_counts_at_once(replicated, http):
    old = replicated.device_with_token("rotating-p1")
    assert ingest(http, replicated.server.url, old, 0).status_code == 200
    replicated.replica.wait_for_replay()
    replicated.replica.pause_replay()
    try:
        # A device and a token the replica has never seen.
        fresh = replicated.device_with_token("fresh-p1")
        assert ingest(http, replicated.server.url, fresh, 0).json()["inserted"] == 6
        assert get(http, replicated, SERIES, fresh)["buckets"] == []  # the replica: not yet
        assert get(http, replicated, "/v1/realtime", fresh)["latest"] is not None
        # A new token for a known device, and the old one revoked.
        new = replicated.new_token("rotating-p1")
        replicated.revoke(old)
        assert ingest(http, replicated.server.url, new, 1).json()["inserted"] == 6
        assert get(http, replicated, SERIES, new)["buckets"]
        for response in (
            ingest(http, replicated.server.url, old, 2),
            http.get(replicated.server.url + SERIES, headers=bearer(old)),
        ):
            assert response.status_code == 401, response.text
    finally:
        replicated.replica.resume_replay()
    replicated.replica.wait_for_replay()
    assert series_counts(http, replicated, new) == [12]
    assert series_counts(http, replicated, fresh) == [6]


def test_an_unreachable_replica_sends_reads_to_the_primary_until_it_is_back(replicated, http):
    token = replicated.device_with_token("fallback-p1")
    assert ingest(http, replicated.server.url, token, 0).status_code == 200
    ready = http.get(replicated.server.url + "/readyz").json()
    assert (ready["status"], ready["replica"]) == ("ready", "ok")

    replicated.replica.stop()
    try:
        assert ingest(http, replicated.server.url, token, 1).json()["inserted"] == 6
        # The replica's kept connection is found broken and the primary answers.
        assert series_counts(http, replicated, token) == [12]
        ready = http.get(replicated.server.url + "/readyz")
        assert ready.status_code == 200
        assert (ready.json()["status"], ready.json()["replica"]) == ("ready", "down")
    finally:
        replicated.replica.start()

    replicated.replica.wait_for_replay()
    wait_until(
        lambda: http.get(replicated.server.url + "/readyz").json()["replica"] == "ok",
        what="the replica back in /readyz",
    )
    assert series_counts(http, replicated, token) == [12]
