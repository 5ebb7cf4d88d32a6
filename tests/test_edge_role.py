"""The edge runs with requirements/edge.txt alone: no DRF, psycopg or redis."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.serverproc import ROOT

SERVER_ONLY = ("rest_framework", "psycopg", "redis", "django_redis", "orjson", "telemetry")

# sys.modules[name] = None makes any later import of it fail, as if it were not installed.
_LAUNCH = (
    "import runpy, sys\n"
    f"for name in {SERVER_ONLY!r}: sys.modules[name] = None\n"
    "sys.argv = ['manage.py', *sys.argv[1:]]\n"
    "runpy.run_path('manage.py', run_name='__main__')\n"
)


def edge_manage(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "P1_ROLE": "edge"}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-c", _LAUNCH, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_edge_role_passes_django_checks_without_server_packages():
    result = edge_manage("check")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["simulate_p1", "hw_pair"])
def test_edge_commands_load_without_server_packages(command):
    result = edge_manage(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
