"""Tokens against a real gunicorn process: near misses, revocation with cached lookups
in several workers, and the throttle on repeated bad tokens from one address.

Constant time: a token is found by its SHA-256 digest (telemetry.tokens.hash_token),
narrowed by an 8-character prefix and confirmed with hmac.compare_digest, so how long
the check takes does not depend on how many leading characters of a guess are right.
The tests here show the behaviour that rests on it: a token wrong only in its last
character, or only in its case, is refused.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from django.utils import timezone

from p1common.processes import ROOT, database_url, run_server
from telemetry.models import DeviceToken, Sample
from telemetry.tokens import issue_token
from tests.conftest import bearer
from tests.hostile.helpers import assert_problem
from tests.samples import BASE_TS, sample, series

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT_A = "203.0.113.10"
CLIENT_B = "198.51.100.20"


def near_misses(token: str) -> list[str]:
    last = "A" if token[-1] != "A" else "B"
    return [token[:-1] + last, token.swapcase(), token + "x", token[:-1]]


def test_token_wrong_in_one_character_is_refused(http, server, device, ingest_token):
    for wrong in near_misses(ingest_token):
        response = http.post(
            f"{server.url}/v1/ingest", json={"samples": series(1)}, headers=bearer(wrong)
        )
        assert_problem(response, 401)
    assert not Sample.objects.exists()


def revoke_in_another_process(token_pk: int, redis_url: str) -> None:
    """Revoke as the admin action does, from a process of its own (like manage.py)."""
    code = (
        f"from telemetry.models import DeviceToken; DeviceToken.objects.get(pk={token_pk}).revoke()"
    )
    env = {"DATABASE_URL": database_url(), "REDIS_URL": redis_url, "PATH": "/usr/bin:/bin"}
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
    )


def test_revoked_token_is_refused_at_once_by_every_worker(http, device, private_redis):
    token, raw = issue_token(device, "read")
    # Long-lived cached lookups: only the revocation itself can make them stale. Each 401
    # here also counts as a bad-token strike from this address; up to 40 of them would
    # reach the default throttle, which is not what this test is about.
    with run_server(
        workers=2,
        threads=1,
        REDIS_URL=private_redis,
        TOKEN_CACHE_TTL_S="3600",
        BAD_TOKEN_RATE="1000/min",
    ) as srv:
        fresh = {**bearer(raw), "Connection": "close"}  # a new connection, any worker
        for _ in range(20):  # both workers have looked the token up and cached it
            assert http.get(f"{srv.url}/v1/devices", headers=fresh).status_code == 200
        # Proof that lookups are cached: a change that bypasses the model's signals (and
        # so the generation) goes unseen by a worker holding the token.
        DeviceToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
        answers = [http.get(f"{srv.url}/v1/devices", headers=fresh) for _ in range(20)]
        assert 200 in {a.status_code for a in answers}
        DeviceToken.objects.filter(pk=token.pk).update(revoked_at=None)
        revoke_in_another_process(token.pk, private_redis)
        for _ in range(20):
            assert_problem(http.get(f"{srv.url}/v1/devices", headers=fresh), 401)
    assert DeviceToken.objects.get(pk=token.pk).revoked_at is not None


def bad_attempt(http: httpx.Client, url: str, address: str) -> httpx.Response:
    headers = {**bearer("not-a-token-of-ours-0123456789abcdef"), "X-Real-IP": address}
    return http.get(f"{url}/v1/devices", headers=headers)


def good_read(http: httpx.Client, url: str, token: str, address: str) -> httpx.Response:
    return http.get(f"{url}/v1/devices", headers={**bearer(token), "X-Real-IP": address})


def test_repeated_bad_tokens_from_one_address_are_throttled(
    http, device, read_token, django_db_setup
):
    with run_server(BAD_TOKEN_RATE="3/min") as srv:
        # Good tokens never count, however many.
        for _ in range(5):
            assert good_read(http, srv.url, read_token, CLIENT_A).status_code == 200
        for _ in range(3):
            assert_problem(bad_attempt(http, srv.url, CLIENT_A), 401)
        throttled = bad_attempt(http, srv.url, CLIENT_A)
        assert_problem(throttled, 429)
        assert 0 < int(throttled.headers["retry-after"]) <= 60
        # While blocked, a right token gets the same 429: guesses tell nothing.
        assert_problem(good_read(http, srv.url, read_token, CLIENT_A), 429)
        # Another address behind the same proxy is not affected.
        assert good_read(http, srv.url, read_token, CLIENT_B).status_code == 200
        assert_problem(bad_attempt(http, srv.url, CLIENT_B), 401)


def test_address_header_counts_only_from_a_trusted_proxy(http, device, read_token, django_db_setup):
    # The test connects from 127.0.0.1, which this server does not trust as a proxy:
    # a client cannot escape the throttle by inventing X-Real-IP addresses.
    with run_server(BAD_TOKEN_RATE="3/min", FORWARDED_ALLOW_IPS="192.0.2.1") as srv:
        for i in range(3):
            assert_problem(bad_attempt(http, srv.url, f"203.0.113.{i}"), 401)
        assert_problem(bad_attempt(http, srv.url, "203.0.113.99"), 429)


def test_sessions_and_ingest_are_unaffected_by_a_blocked_address_elsewhere(
    http, device, ingest_token, django_db_setup
):
    with run_server(BAD_TOKEN_RATE="2/min") as srv:
        for _ in range(3):
            bad_attempt(http, srv.url, CLIENT_A)
        headers = {**bearer(ingest_token), "X-Real-IP": CLIENT_B}
        body = {"samples": [sample(BASE_TS)]}
        response = http.post(f"{srv.url}/v1/ingest", json=body, headers=headers)
        assert response.status_code == 200, response.text


def test_tokens_carry_256_random_bits_and_only_their_digest_is_stored(device):
    import base64
    import hashlib

    raws = [issue_token(device, "read")[1] for _ in range(3)]
    assert len(set(raws)) == 3
    for raw in raws:
        assert len(base64.urlsafe_b64decode(raw + "=")) == 32
        row = DeviceToken.objects.get(prefix=raw[:8])
        assert row.token_hash == hashlib.sha256(raw.encode()).hexdigest()
        assert raw not in {row.prefix, row.token_hash, row.label, row.scopes}
