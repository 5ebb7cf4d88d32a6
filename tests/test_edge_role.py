"""The edge runs with requirements/edge.txt alone (no DRF, psycopg or redis), and its
commands need no P1_ROLE=edge there (issue 11, point 9); what cannot run in such an
install says so in one line, never with a traceback.

Most tests use a real edge-only virtualenv (p1common/edge_install.py). A few block the
server packages inside this environment instead (sys.modules[name] = None), which other
test files share through SERVER_ONLY.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edgeclient.spool import Spool
from p1common.edge_install import EdgeInstall, build_edge_install
from p1common.processes import ROOT, ChildStack, start_child, start_edge, start_simulator
from tests.edge_pipeline.conftest import bound_socket
from tests.samples import sample, series
from tests.waiting import wait_until

SERVER_ONLY = ("rest_framework", "psycopg", "redis", "django_redis", "orjson", "telemetry")
EDGE_COMMANDS = ["run_edge", "hw_pair", "edge_status", "simulate_p1"]

# sys.modules[name] = None makes any later import of it fail, as if it were not installed.
_LAUNCH = (
    "import runpy, sys\n"
    f"for name in {SERVER_ONLY!r}: sys.modules[name] = None\n"
    "sys.argv = ['manage.py', *sys.argv[1:]]\n"
    "runpy.run_path('manage.py', run_name='__main__')\n"
)


@pytest.fixture(scope="session")
def edge_install(tmp_path_factory: pytest.TempPathFactory) -> EdgeInstall:
    return build_edge_install(tmp_path_factory.mktemp("edge-venv"))


def one_line(result: subprocess.CompletedProcess) -> str:
    """The single line a failed command wrote to stderr (no traceback, nothing else)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


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


def test_the_edge_install_has_the_edge_packages_and_none_of_the_servers(edge_install):
    probe = "import importlib.util as u; print([n for n in %r if u.find_spec(n)])"
    wanted = ("django", "httpx", "certifi", "rest_framework", "psycopg", "redis", "django_redis")
    result = subprocess.run(
        [str(edge_install.python), "-c", probe % (wanted,)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == "['django', 'httpx', 'certifi']"


def test_edge_role_passes_django_checks_without_server_packages():
    result = edge_manage("check")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["simulate_p1", "hw_pair"])
def test_edge_commands_load_without_server_packages(command):
    result = edge_manage(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


# -- the edge install, no P1_ROLE -----------------------------------------------------


@pytest.mark.parametrize("command", [*EDGE_COMMANDS, "check"])
def test_every_edge_command_loads_in_the_edge_install_without_p1_role(edge_install, command):
    args = [command] if command == "check" else [command, "--help"]
    result = edge_install.manage(*args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_edge_status_reads_the_spool_in_the_edge_install(edge_install, tmp_path):
    spool_path = tmp_path / "spool.sqlite3"
    with Spool(spool_path) as spool:
        spool.add_many(series(2))
    result = edge_install.manage("edge_status", env={"EDGE_SPOOL_PATH": str(spool_path)})
    assert "pending: 2 samples" in result.stdout, result.stderr
    assert "Traceback" not in result.stderr


def test_hw_pair_fails_in_one_line_in_the_edge_install(edge_install):
    with bound_socket() as closed:  # bound, not listening: refused
        port = closed.getsockname()[1]
        result = edge_install.manage("hw_pair", "--host", f"127.0.0.1:{port}", "--timeout", "1")
    assert result.returncode == 1
    assert one_line(result).startswith(f"CommandError: 127.0.0.1:{port}: ")


def test_run_edge_refuses_a_bad_setting_in_one_line_in_the_edge_install(edge_install):
    result = edge_install.manage("run_edge", env={"HW_P1_HOST": "127.0.0.1:9"})
    assert result.returncode == 2
    assert one_line(result).startswith("CommandError: VPS_INGEST_URL: required")


@pytest.fixture
def edge_processes() -> Iterator[ChildStack]:
    with ChildStack() as started:
        yield started


def test_simulate_p1_and_run_edge_spool_readings_in_the_edge_install(
    edge_install, edge_processes, tmp_path
):
    # No P1_ROLE: the edge install's environment alone (defaults={}).
    python = str(edge_install.python)
    simulator = start_simulator(
        api="v1", env=edge_install.env(), python=python, defaults={}, form="manage"
    )
    edge_processes.add(simulator.child)
    banner = simulator.child.log.text().splitlines()[0]
    assert "simulated P1 meter" in banner, simulator.child.log.text()
    address = simulator.address

    spool_path = tmp_path / "spool.sqlite3"
    closed = bound_socket()  # the server is beside the point: uploads just fail
    env = spooling_edge_env(address, spool_path, closed)
    edge = start_edge({}, base=edge_install.env(env), python=python, defaults={}, form="manage")
    edge_processes.add(edge)
    log = edge.log
    log.wait_for("is a HWE-P1")
    wait_until(lambda: _depth(spool_path) >= 3, what="readings in the spool")
    edge.process.terminate()
    assert edge.process.wait(20) == 0
    closed.close()
    assert "Traceback" not in log.text()


def spooling_edge_env(address: str, spool_path: Path, closed: socket.socket) -> dict[str, str]:
    """An edge polling the v1 meter at ``address`` into ``spool_path``, uploading to a
    port nobody answers (``closed``)."""
    return {
        "HW_P1_HOST": address, "HW_P1_API": "v1", "EDGE_SPOOL_PATH": str(spool_path),
        "VPS_INGEST_URL": f"http://127.0.0.1:{closed.getsockname()[1]}",
        "VPS_DEVICE_TOKEN": "unused", "POLL_INTERVAL_S": "0.2", "LOG_LEVEL": "info",
    }  # fmt: skip


def _depth(path) -> int:
    if not path.exists():
        return 0
    with Spool(path, create=False) as spool:
        return spool.depth()


@pytest.mark.parametrize(
    "args", [["migrate"], ["createsuperuser"], ["runserver"], ["rebuild_capacity"]]
)
def test_a_server_command_in_the_edge_install_fails_in_one_line(edge_install, args):
    result = edge_install.manage(*args)
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith(f"configuration error: manage.py {args[0]}: not an edge command; ")
    assert "no rest_framework" in line and "requirements/server.txt" in line


def test_p1_role_server_in_the_edge_install_names_what_to_install(edge_install):
    result = edge_install.manage("check", env={"P1_ROLE": "server"})
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("configuration error: P1_ROLE=server: the server packages are not ")
    assert "rest_framework" in line and "requirements/server.txt" in line


def test_the_settings_alone_choose_the_edge_role_in_the_edge_install(edge_install):
    # Any process that loads the settings without manage.py (a script, django.setup())
    # gets the edge settings there, not a DRF ModuleNotFoundError.
    probe = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'p1platform.settings'\n"
        "from django.conf import settings; import django; django.setup()\n"
        "print(settings.ROLE, settings.ROOT_URLCONF)"
    )
    result = subprocess.run(
        [str(edge_install.python), "-c", probe], cwd=ROOT, env=edge_install.env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.stdout.strip() == "edge p1platform.urls_edge", result.stderr


# -- the full install ------------------------------------------------------------------


def full_manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    child = {k: v for k, v in os.environ.items() if k != "P1_ROLE"} | env
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=child, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_edge_commands_get_the_edge_settings_in_a_full_install_without_p1_role(tmp_path):
    # A server-only setting that is broken would stop the server settings at start; the
    # edge settings never read it, so edge_status running shows which ones it got.
    spool_path = tmp_path / "spool.sqlite3"
    with Spool(spool_path) as spool:
        spool.add(sample(datetime.now(UTC)))
    result = full_manage("edge_status", REDIS_URL="not-a-redis-url",
                         EDGE_SPOOL_PATH=str(spool_path))  # fmt: skip
    assert "pending: 1 samples" in result.stdout, result.stderr
    server = full_manage("check", REDIS_URL="not-a-redis-url")
    assert server.returncode == 2
    assert one_line(server).startswith("configuration error: REDIS_URL: ")


def test_edge_commands_get_the_edge_settings_even_under_p1_role_server(tmp_path):
    # The server's apps do not include edgeclient (the wire format is p1wire), so the
    # edge commands exist only under the edge settings: manage.py gives them those even
    # where P1_ROLE=server is set (the server image), and a broken server-only setting
    # shows that the server settings were not loaded.
    spool_path = tmp_path / "spool.sqlite3"
    with Spool(spool_path) as spool:
        spool.add(sample(datetime.now(UTC)))
    result = full_manage("edge_status", P1_ROLE="server", REDIS_URL="not-a-redis-url",
                         EDGE_SPOOL_PATH=str(spool_path))  # fmt: skip
    assert "pending: 1 samples" in result.stdout, result.stderr
    simulator = full_manage("simulate_p1", "--help", P1_ROLE="server")
    assert simulator.returncode == 0, simulator.stderr
    assert "--profile" in simulator.stdout


def test_the_server_settings_do_not_install_the_edge():
    probe = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'p1platform.settings'\n"
        "import django; django.setup()\n"
        "from django.conf import settings; import sys\n"
        "print(settings.ROLE, 'edgeclient' in settings.INSTALLED_APPS, 'edgeclient' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("P1_ROLE", "DATABASE_URL")}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env | {"P1_ROLE": "server"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.stdout.strip() == "server False False", result.stderr


def test_p1_role_edge_refuses_a_server_command_in_one_line():
    result = full_manage("migrate", P1_ROLE="edge")
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith("configuration error: manage.py migrate: not an edge command; ")
    assert "unset P1_ROLE or set P1_ROLE=server" in line


def test_a_server_install_missing_one_of_its_packages_names_it_in_one_line():
    # orjson is in requirements/server.txt only; telemetry.views imports it.
    launch = _LAUNCH.replace(repr(SERVER_ONLY), repr(("orjson",)))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"P1_ROLE": "server"}
    result = subprocess.run(
        [sys.executable, "-c", launch, "check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert one_line(result) == (
        "configuration error: orjson is not installed: the server needs requirements/server.txt"
    )


# -- python -m edgeclient: the same commands without Django (issue 12, point 5) --------

# Runs ``python -m edgeclient ARGS`` and, at exit, writes which of these it imported.
NOT_ON_THE_EDGE = ("django", "rest_framework", "psycopg", "redis", "p1platform", "p1common")
_MODULE_LAUNCH = (
    "import atexit, runpy, sys\n"
    "def imported():\n"
    f"    found = sorted({{m.split('.')[0] for m in sys.modules}} & set({NOT_ON_THE_EDGE!r}))\n"
    "    print('imported:', ','.join(found), file=sys.stderr, flush=True)\n"
    "atexit.register(imported)\n"
    "sys.argv = ['edgeclient', *sys.argv[1:]]\n"
    "runpy.run_module('edgeclient', run_name='__main__', alter_sys=True)\n"
)


def edge_module(edge_install: EdgeInstall, *args: str) -> list[str]:
    return [str(edge_install.python), "-c", _MODULE_LAUNCH, *args]


def imported_at_exit(stderr: str) -> str:
    [line] = [ln for ln in stderr.splitlines() if ln.startswith("imported:")]
    return line.removeprefix("imported:").strip()


def test_python_m_edgeclient_simulate_run_and_status_never_import_django(
    edge_install, edge_processes, tmp_path
):
    simulator = start_child(
        "meter (python -m edgeclient simulate)",
        edge_module(edge_install, "simulate", "--port", "0", "--api", "v1"),
        edge_install.env(),
    )
    edge_processes.add(simulator)
    banner = simulator.wait_for_line("simulated P1 meter")
    address = banner.split(" on ", 1)[1].split()[0]

    spool_path = tmp_path / "spool.sqlite3"
    closed = bound_socket()  # the server is beside the point: uploads just fail
    env = spooling_edge_env(address, spool_path, closed)
    edge = start_child(
        "edge (python -m edgeclient run)",
        edge_module(edge_install, "run"),
        edge_install.env(env),
        read="stderr",
    )
    edge_processes.add(edge)
    log = edge.log
    log.wait_for("is a HWE-P1")  # the log lines manage.py run_edge writes
    wait_until(lambda: _depth(spool_path) >= 3, what="readings in the spool")
    assert edge.terminate() == 0
    closed.close()
    log.wait_closed()
    assert "Traceback" not in log.text()
    assert imported_at_exit(log.text()) == ""

    assert simulator.terminate() == 0
    simulator.log.wait_closed()
    assert imported_at_exit(simulator.log.text()) == ""

    status = subprocess.run(
        edge_module(edge_install, "status"), cwd=ROOT,
        env=edge_install.env({"EDGE_SPOOL_PATH": str(spool_path)}),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert f"spool: {spool_path}" in status.stdout, status.stderr
    assert imported_at_exit(status.stderr) == ""


def both_forms(
    edge_install: EdgeInstall, manage_args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """(manage.py COMMAND ARGS, python -m edgeclient SUBCOMMAND ARGS) in the edge install."""
    command, *args = manage_args
    sub = {"run_edge": "run", "edge_status": "status", "hw_pair": "pair",
           "simulate_p1": "simulate"}[command]  # fmt: skip
    managed = edge_install.manage(*manage_args, env=env)
    module = subprocess.run(
        [str(edge_install.python), "-m", "edgeclient", sub, *args],
        cwd=ROOT, env=edge_install.env(env), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return managed, module


def test_each_edge_command_prints_the_same_and_exits_the_same_in_both_forms(edge_install, tmp_path):
    empty = tmp_path / "spool.sqlite3"
    Spool(empty).close()
    for args, env, code in [
        (["edge_status"], {"EDGE_SPOOL_PATH": str(empty)}, 0),
        (["edge_status", "--json"], {"EDGE_SPOOL_PATH": str(tmp_path / "none")}, 1),
        (["run_edge"], {"HW_P1_HOST": "127.0.0.1:9"}, 2),
        (["run_edge"], {"VPS_INGEST_URL": "http://vps.example", "VPS_DEVICE_TOKEN": "t"}, 2),
        (["hw_pair", "--host", "127.0.0.1:notaport"], {}, 1),
        (["simulate_p1", "--port", "0", "--speed", "0"], {}, 1),
    ]:
        managed, module = both_forms(edge_install, args, env)
        assert (managed.returncode, module.returncode) == (code, code), (args, managed, module)
        assert managed.stdout == module.stdout, args
        assert managed.stderr == module.stderr, args
        if code == 2:
            assert one_line(module).startswith("CommandError: VPS_INGEST_URL: ")


@pytest.mark.parametrize("command", EDGE_COMMANDS)
def test_both_forms_of_each_edge_command_take_the_same_options(edge_install, command):
    managed, module = both_forms(edge_install, [command, "--help"])
    assert module.returncode == 0, module.stderr

    def own_options(text: str) -> set[str]:
        options = {word.strip("[],") for word in text.split() if word.startswith(("--", "[--"))}
        # Django's own options of every manage.py command.
        django = {"--version", "--verbosity", "--settings", "--pythonpath", "--traceback",
                  "--no-color", "--force-color", "--skip-checks"}  # fmt: skip
        return {option.split("=")[0] for option in options} - django

    assert own_options(module.stdout) == own_options(managed.stdout)
