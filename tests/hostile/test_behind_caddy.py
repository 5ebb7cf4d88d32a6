"""The bad-token throttle behind the real Caddy, with clients on different addresses.

Behind the proxy every request reaches gunicorn from Caddy's own address, so the app
must count each client by the address Caddy saw (X-Real-IP, which the Caddyfile sets),
and a client must not be able to pick that address itself. The clients connect from
127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback), over TLS verified against Caddy's
local root alone.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from p1common.processes import run_server
from p1common.services import free_port
from tests.conftest import bearer
from tests.hostile.helpers import assert_problem
from tests.tools import need

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT_A = "127.0.0.2"
CLIENT_B = "127.0.0.3"
BAD_TOKEN = "not-a-token-of-ours-0123456789abcdef"
HTTP_TIMEOUT_S = 10.0


@pytest.fixture
def caddy_in_front(tmp_path: Path, django_db_setup):
    """Yields a starter: the repository's Caddyfile in front of a test server."""
    need("caddy", "caddy")
    from scripts.chaos.stack import Caddy

    started = []

    def start(server_port: int) -> Caddy:
        caddy = Caddy(tmp_path / "caddy", free_port(), free_port(), server_port, tmp_path / "log")
        started.append(caddy)
        caddy.start()
        caddy.wait_ready("/healthz")
        return caddy

    yield start
    for caddy in started:
        caddy.stop()


def client_from(address: str, caddy) -> httpx.Client:
    transport = httpx.HTTPTransport(
        local_address=address, verify=ssl.create_default_context(cafile=str(caddy.root_ca))
    )
    return httpx.Client(base_url=caddy.url, transport=transport, timeout=HTTP_TIMEOUT_S)


def devices(client: httpx.Client, token: str, claimed_address: str | None = None):
    headers = bearer(token)
    if claimed_address:
        headers["X-Real-IP"] = claimed_address
    return client.get("/v1/devices", headers=headers)


def test_behind_caddy_each_client_address_has_its_own_bad_token_count(
    device, read_token, caddy_in_front
):
    with run_server(BAD_TOKEN_RATE="3/min") as srv:
        caddy = caddy_in_front(int(srv.url.rsplit(":", 1)[1]))
        with client_from(CLIENT_A, caddy) as a, client_from(CLIENT_B, caddy) as b:
            # Every guess claims another address; Caddy replaces the claim with the
            # address it saw, so all of them count against A.
            for i in range(3):
                assert_problem(devices(a, BAD_TOKEN, f"203.0.113.{i}"), 401)
            assert_problem(devices(a, BAD_TOKEN, "198.51.100.7"), 429)
            assert_problem(devices(a, read_token), 429)
            # B shares the proxy, not the count.
            assert devices(b, read_token).status_code == 200
            assert_problem(devices(b, BAD_TOKEN), 401)
