"""Start-up as an operator meets it (issue 16, point 6): a database that does not exist
or cannot be reached is one line naming DATABASE_URL and what to do, for manage.py,
gunicorn with the deployment's configuration, and `make run` (scripts/serve.sh); a
busy port for `make run` names the port and how to choose another; `make run` uses
deploy/gunicorn.conf.py and leaves no control socket in the home directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from p1common.processes import ROOT, listening_socket
from tests.waiting import wait_until

MISSING_DB = "postgres://postgres:hunter2@127.0.0.1:5432/p1_h16_never_created"
TIMEOUT_S = 60


def _env(tmp_path: Path, **changes: str) -> dict[str, str]:
    # No XDG_RUNTIME_DIR: gunicorn's control socket would go to $HOME/.gunicorn.
    unset = ("DATABASE_URL", "REDIS_URL", "XDG_RUNTIME_DIR")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(HOME=str(tmp_path / "home"), DATA_DIR=str(tmp_path / "data"), **changes)
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def _unused_port() -> int:
    with listening_socket(0, listen=False) as sock:
        return sock.getsockname()[1]


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_manage_py_on_a_database_that_does_not_exist_says_so_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=ROOT,
        env=_env(tmp_path, DATABASE_URL=MISSING_DB),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert line.startswith("database error: DATABASE_URL=")
    assert "does not exist" in line and "createdb" in line
    assert "hunter2" not in line


def test_manage_py_on_an_unreachable_database_says_what_to_check(tmp_path):
    url = f"postgres://postgres@127.0.0.1:{_unused_port()}/p1_h16"
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input"],
        cwd=ROOT,
        env=_env(tmp_path, DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert "DATABASE_URL=" in line and "is PostgreSQL running" in line


def test_gunicorn_with_the_deployment_config_stops_with_one_database_line(tmp_path):
    gunicorn = Path(sys.executable).with_name("gunicorn")
    result = subprocess.run(
        [str(gunicorn), "-c", "deploy/gunicorn.conf.py", "p1platform.wsgi:application"],
        cwd=ROOT,
        env=_env(tmp_path, DATABASE_URL=MISSING_DB, GUNICORN_BIND=f"127.0.0.1:{_unused_port()}"),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("database error:")]
    assert "DATABASE_URL=" in line and "createdb" in line
    assert "Booting worker" not in result.stderr


def test_make_run_on_a_busy_port_names_it_and_how_to_choose_another(tmp_path):
    with listening_socket(0) as busy:
        port = busy.getsockname()[1]
        result = subprocess.run(
            ["bash", "scripts/serve.sh"],
            cwd=ROOT,
            env=_env(tmp_path, PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert f"port {port} on 127.0.0.1 is already in use" in line
    assert f"PORT={port + 1} make run" in line


def test_make_run_on_a_missing_database_says_so_in_one_line(tmp_path):
    result = subprocess.run(
        ["bash", "scripts/serve.sh"],
        cwd=ROOT,
        env=_env(tmp_path, DATABASE_URL=MISSING_DB, PORT=str(_unused_port())),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 2
    assert _one_line(result.stderr).startswith("database error: DATABASE_URL=")


def test_make_run_serves_with_the_deployment_config_and_no_control_socket(tmp_path):
    port = _unused_port()
    env = _env(tmp_path, PORT=str(port), WEB_CONCURRENCY="1")
    with subprocess.Popen(
        ["bash", "scripts/serve.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as serve:
        try:

            def ready() -> bool:
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).is_success
                except httpx.TransportError:
                    return False

            wait_until(ready, timeout_s=TIMEOUT_S, what="make run answering")
        finally:
            serve.terminate()
            _, stderr = serve.communicate(timeout=TIMEOUT_S)
    # deploy/gunicorn.conf.py turns gunicorn's control socket off: nothing under $HOME.
    assert "Listening at: http://127.0.0.1:" in stderr, stderr
    assert not (tmp_path / "home" / ".gunicorn").exists(), stderr


def test_the_start_up_check_connects_with_every_option_of_the_url(tmp_path):
    """sslmode=verify-full with a CA file that is not there: PostgreSQL on loopback here
    speaks no TLS, so the app cannot connect; the check must not connect anyway without
    the options (and send the password unverified)."""
    url = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=verify-full&sslrootcert=/nonexistent"
    result = subprocess.run(
        [sys.executable, "-m", "p1platform.startup", "database"],
        cwd=ROOT,
        env=_env(tmp_path, DATABASE_URL=url),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 2, result.stderr
    assert _one_line(result.stderr).startswith("DATABASE_URL=")


def test_manage_py_keeps_the_traceback_of_a_statement_that_failed_on_an_open_connection(
    tmp_path,
):
    """Only a connection that could not be opened is the operator's one line; a statement
    timeout on a working database is a program's error and keeps its traceback."""
    code = (
        "from django.db import connection; c = connection.cursor(); "
        "c.execute(\"SET statement_timeout = '50ms'\"); c.execute('SELECT pg_sleep(1)')"
    )
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        url = "postgres://postgres@127.0.0.1:5432/postgres"
    base = url.rsplit("/", 1)[0] + "/postgres"
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=_env(tmp_path, DATABASE_URL=base),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "statement timeout" in result.stderr
    assert "database error: DATABASE_URL=" not in result.stderr
