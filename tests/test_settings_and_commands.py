"""Start-up checks and operator commands, run as an operator would run them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import pytest

from p1common.processes import ROOT, database_url
from tests.conftest import bearer
from tests.samples import series

PRODUCTION = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "p1.example.org",
}


def manage(*args: str, **env: str | None) -> subprocess.CompletedProcess:
    child_env = dict(os.environ)
    for name, value in env.items():
        if value is None:
            child_env.pop(name, None)
        else:
            child_env[name] = value
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CACHE_TTL_S": "soon"}, "CACHE_TTL_S"),
        ({"INGEST_MAX_BATCH": "0"}, "INGEST_MAX_BATCH"),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"DATABASE_URL": "mysql://root@localhost/p1"}, "DATABASE_URL"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"INGEST_THROTTLE_RATE": "lots"}, "INGEST_THROTTLE_RATE"),
        # A worker that never works, or works more than all of its time.
        ({"INGEST_STEPS_DUTY_PERCENT": "0"}, "INGEST_STEPS_DUTY_PERCENT"),
        ({"INGEST_STEPS_DUTY_PERCENT": "101"}, "INGEST_STEPS_DUTY_PERCENT"),
        # The tariff needs 12 whole months and the running one: fewer is refused.
        ({"RAW_SAMPLE_RETENTION_MONTHS": "12"}, "RAW_SAMPLE_RETENTION_MONTHS"),
        ({"RAW_SAMPLE_RETENTION_MONTHS": "1"}, "RAW_SAMPLE_RETENTION_MONTHS"),
        ({"RAW_SAMPLE_RETENTION_MONTHS": "a year"}, "RAW_SAMPLE_RETENTION_MONTHS"),
        ({**PRODUCTION, "SECRET_KEY": None}, "SECRET_KEY"),
        ({**PRODUCTION, "SECRET_KEY": "short"}, "SECRET_KEY"),
        ({**PRODUCTION, "ALLOWED_HOSTS": None}, "ALLOWED_HOSTS"),
        ({**PRODUCTION, "DEBUG": "true"}, "DEBUG"),
    ],
)
def test_bad_setting_stops_start_up_with_one_line_naming_it(env, named):
    result = manage("check", **env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]


def test_production_mode_passes_the_deploy_check_without_warnings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


@pytest.mark.django_db(transaction=True)
def test_operator_registers_a_device_and_its_token_ingests(server, http, owner):
    from telemetry.models import Device

    env = {"DATABASE_URL": database_url()}
    created = manage(
        "create_device", "attic-p1", "--name", "Attic", "--owner", "owner", "--price", "53.3", **env
    )
    assert created.returncode == 0, created.stderr
    issued = manage("issue_token", "attic-p1", "--scopes", "ingest,read", **env)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip().splitlines()[-1]
    assert len(token) >= 43

    response = http.post(
        f"{server.url}/v1/ingest", json={"samples": series(2)}, headers=bearer(token)
    )
    assert response.json()["inserted"] == 2
    device = Device.objects.get(device_id="attic-p1")
    assert device.owner == owner
    assert device.timezone == "Europe/Brussels"
    assert device.tokens.get().scopes == "ingest,read"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("create_device", "Bad Id!"), "device_id"),
        (("create_device", "ok-id", "--timezone", "Mars/Olympus"), "timezone"),
        (("create_device", "ok-id", "--owner", "nobody"), "owner"),
        (("issue_token", "no-such-device"), "device_id"),
        (("issue_token", "home-p1", "--scopes", "ingest,admin"), "--scopes"),
    ],
)
def test_bad_command_input_is_one_line_and_changes_nothing(device, args, named):
    from telemetry.models import Device, DeviceToken

    result = manage(*args, DATABASE_URL=database_url())
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert Device.objects.count() == 1
    assert DeviceToken.objects.count() == 0
