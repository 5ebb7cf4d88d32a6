"""The private servers really go down and come back, at the same address."""

from __future__ import annotations

import psycopg
import pytest
import redis

from p1common.services import PrivatePostgres, PrivateRedis, ServiceMissing
from tests.tools import tool_missing

CONNECT_TIMEOUT_S = 5


@pytest.fixture
def postgres(private_postgres: PrivatePostgres) -> PrivatePostgres:
    return private_postgres


def pg_connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True)


def test_a_stopped_postgres_refuses_connections_and_keeps_its_data_after_start(postgres):
    url = postgres.create_database("kept")
    with pg_connect(url) as conn:
        conn.execute("CREATE TABLE reading (n int)")
        conn.execute("INSERT INTO reading VALUES (1), (2)")
    postgres.stop()
    assert not postgres.running
    with pytest.raises(psycopg.OperationalError):
        pg_connect(url)
    postgres.start()
    with pg_connect(url) as conn:
        assert conn.execute("SELECT sum(n) FROM reading").fetchone() == (3,)


def test_a_postgres_restart_cuts_open_sessions_and_serves_new_ones(postgres):
    before = pg_connect(postgres.url())
    port = postgres.port
    postgres.restart()
    with pytest.raises(psycopg.OperationalError):
        before.execute("SELECT 1")
    before.close()
    assert postgres.port == port
    with pg_connect(postgres.url()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_stopped_redis_refuses_connections_and_a_client_reconnects_after_start(
    private_redis_server,
):
    client = redis.Redis.from_url(private_redis_server.url(), socket_timeout=CONNECT_TIMEOUT_S)
    assert client.ping()
    private_redis_server.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    private_redis_server.start()
    assert client.ping()  # the same client, the same address
    client.close()


def test_leaving_the_context_stops_the_servers_and_deletes_their_files():
    try:
        pg, cache = PrivatePostgres(), PrivateRedis()
    except ServiceMissing as exc:
        tool_missing(str(exc))
    with pg, cache:
        roots = [pg.root, cache.root]
        processes = [pg.process, cache.process]
    assert all(p.poll() is not None for p in processes)
    assert not any(root.exists() for root in roots)
