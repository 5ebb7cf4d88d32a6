"""The deployment files are valid and agree with the code.

Checked with the real tools where they are installed (Debian packages: docker-compose,
caddy, systemd); each such test skips, naming the package, where the tool is missing.
No Docker engine is needed: compose files are only validated, images are not built.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.tools import need

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ENV_EXAMPLE = ROOT / ".env.example"
EDGE_ENV_EXAMPLE = DEPLOY / "edge.env.example"
TOOL_TIMEOUT_S = 60

# Variables of .env.example that no code of ours reads: the database image's own.
IMAGE_VARIABLES = {
    "POSTGRES_USER": "docker-compose.vps.yml",
    "POSTGRES_PASSWORD": "docker-compose.vps.yml",
    "POSTGRES_DB": "docker-compose.vps.yml",
}


def run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result


def env_names(path: Path) -> set[str]:
    """NAME of every `NAME=value` line, commented out (`# NAME=value`) or not."""
    pattern = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
    return set(pattern.findall(path.read_text()))


# --- compose files -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compose_file", "env_file"),
    [
        ("docker-compose.vps.yml", ENV_EXAMPLE),
        ("docker-compose.edge.yml", EDGE_ENV_EXAMPLE),
    ],
)
def test_compose_file_is_valid(compose_file: str, env_file: Path) -> None:
    docker_compose = need("docker-compose", "docker-compose")
    # P1_ENV_FILE: the example instead of the real (secret, absent in CI) env file.
    run(
        [docker_compose, "-f", f"deploy/{compose_file}", "config", "-q"],
        P1_ENV_FILE=str(env_file),
    )


def test_vps_stack_waits_for_healthy_services() -> None:
    docker_compose = need("docker-compose", "docker-compose")
    config = run(
        [docker_compose, "-f", "deploy/docker-compose.vps.yml", "config"],
        P1_ENV_FILE=str(ENV_EXAMPLE),
    ).stdout
    assert "timescale/timescaledb:" in config
    # app on db and redis; caddy, the ingest-steps worker and prune on app (it migrates).
    # ... and the opt-in mqtt-publisher (its profile) on app.
    assert config.count("condition: service_healthy") == 7
    assert "TIMESCALEDB: require" in config
    assert "/readyz" in config


def test_vps_stack_runs_the_ingest_steps_worker_the_app_defers_to() -> None:
    docker_compose = need("docker-compose", "docker-compose")
    config = yaml.safe_load(
        run(
            [docker_compose, "-f", "deploy/docker-compose.vps.yml", "config"],
            P1_ENV_FILE=str(ENV_EXAMPLE),
        ).stdout
    )
    app, worker = config["services"]["app"], config["services"]["ingest-steps"]
    assert app["environment"]["INGEST_STEPS_WORKER"] == "on"
    assert worker["environment"]["INGEST_STEPS_WORKER"] == "on"
    assert worker["image"] == app["image"]
    assert worker["entrypoint"] + worker["command"] == ["python", "manage.py", "run_ingest_steps"]


# --- Caddy -----------------------------------------------------------------------------


@pytest.mark.parametrize("domain", [None, "p1.example.org"])
def test_caddyfile_is_valid(tmp_path: Path, domain: str | None) -> None:
    caddy = need("caddy", "caddy")
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    if domain:
        env["VPS_DOMAIN"] = domain
    run([caddy, "validate", "--config", "Caddyfile", "--adapter", "caddyfile"], **env)


def test_caddyfile_headers_and_limits(tmp_path: Path) -> None:
    caddy = need("caddy", "caddy")
    adapted = run(
        [caddy, "adapt", "--config", "Caddyfile", "--adapter", "caddyfile"],
        HOME=str(tmp_path),
        VPS_DOMAIN="p1.example.org",
    ).stdout
    assert '"p1.example.org"' in adapted
    for header in (
        "Strict-Transport-Security",
        "X-Content-Type-Options",
        "X-Frame-Options",
        "Referrer-Policy",
        "Content-Security-Policy",
    ):
        assert header in adapted, header
    csp = re.search(r"default-src [^\"]*", adapted).group(0)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "X-Real-Ip" in adapted or "X-Real-IP" in adapted
    assert '"zstd"' in adapted and '"gzip"' in adapted
    # Above the app's own limit for INGEST_MAX_BATCH=5000 (5000 x 1536 + 4096 bytes), so
    # the app answers 413 with a problem document, and not far above it.
    max_size = int(re.search(r'"max_size":\s*(\d+)', adapted).group(1))
    assert 5000 * 1536 + 4096 < max_size <= 8 * 1024 * 1024


# --- systemd ---------------------------------------------------------------------------


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = need("systemd-analyze", "systemd")
    # verify insists that ExecStart= binaries exist: point the units at stand-ins.
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    for name in ("python", "gunicorn"):
        (venv_bin / name).write_text("#!/bin/sh\n")
        (venv_bin / name).chmod(0o755)
    units = []
    for unit in sorted((DEPLOY / "systemd").glob("*.service")) + sorted(
        (DEPLOY / "systemd").glob("*.timer")
    ):
        text = unit.read_text().replace("/opt/p1platform/.venv/bin/", f"{venv_bin}/")
        (tmp_path / unit.name).write_text(text)
        units.append(str(tmp_path / unit.name))
    assert len(units) == 7
    run([analyze, "verify", *units])


def test_systemd_units_are_hardened() -> None:
    for name in (
        "p1-edge.service",
        "p1-server.service",
        "p1-ingest-steps.service",
        "p1-mqtt-publisher.service",
        "p1-prune.service",
    ):
        text = (DEPLOY / "systemd" / name).read_text()
        for line in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "EnvironmentFile=/etc/p1platform/",
        ):
            assert line in text, (name, line)
        assert re.search(r"^User=p1", text, re.MULTILINE), name
    edge = (DEPLOY / "systemd" / "p1-edge.service").read_text()
    assert "Restart=always" in edge
    assert "ReadWritePaths=/var/lib/p1edge" in edge
    assert "EDGE_SPOOL_PATH=/var/lib/p1edge/" in edge
    # The edge runs without Django; exit 2 (a setting to fix) must still stop restarts.
    assert re.search(r"^ExecStart=\S+/python -m edgeclient run$", edge, re.MULTILINE)
    assert re.search(r"^RestartPreventExitStatus=2$", edge, re.MULTILINE)
    worker = (DEPLOY / "systemd" / "p1-ingest-steps.service").read_text()
    assert re.search(r"^ExecStart=\S+/python manage.py run_ingest_steps$", worker, re.MULTILINE)
    assert "After=" in worker and "p1-server.service" in worker


def test_raw_samples_are_pruned_daily_by_a_timer_and_in_the_compose_stack() -> None:
    timer = (DEPLOY / "systemd" / "p1-prune.timer").read_text()
    service = (DEPLOY / "systemd" / "p1-prune.service").read_text()
    assert re.search(r"^Unit=p1-prune\.service$", timer, re.MULTILINE)
    assert re.search(r"^OnCalendar=\S+", timer, re.MULTILINE)
    assert "Persistent=true" in timer and "WantedBy=timers.target" in timer
    assert re.search(r"^Type=oneshot$", service, re.MULTILINE)
    assert re.search(r"^ExecStart=\S+/python manage.py prune_samples$", service, re.MULTILINE)
    compose = (DEPLOY / "docker-compose.vps.yml").read_text()
    # A process that waits between runs and ends on SIGTERM, not a shell loop.
    assert '["prune_samples", "--every", "1d"]' in compose
    assert "sleep" not in compose


# --- images --------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", ["Dockerfile.server", "Dockerfile.edge"])
def test_dockerfile_basics(dockerfile: str) -> None:
    text = (DEPLOY / dockerfile).read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert len(stages) >= 2, "multi-stage"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE).group(1)
    assert base.startswith("python:3.11-slim-") and ":latest" not in base
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and not users[-1].startswith(("root", "0")), "runs as a non-root user"
    assert "HEALTHCHECK" in text
    if dockerfile == "Dockerfile.edge":
        assert "requirements/edge.txt" in text and "server.txt" not in text
        assert "edge_status" in text and "P1_ROLE=edge" in text
        assert 'CMD ["python", "-m", "edgeclient", "run"]' in text
        assert 'CMD ["python", "-m", "edgeclient", "status"]' in text
        assert "COPY p1wire" in text and "COPY edgeclient" in text
    else:
        assert "requirements/server.txt" in text and "/readyz" in text


def test_entrypoint_migrates_collects_then_execs() -> None:
    script = DEPLOY / "entrypoint-server.sh"
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", str(script)], check=True)
    text = script.read_text()
    assert text.index("migrate") < text.index("collectstatic") < text.index('exec "$@"')
    # DEVICE_TOKENS needs the schema; its bad entry must stop the start before gunicorn.
    assert text.index("migrate --no-input") < text.index("provision_device_tokens")
    assert text.index("provision_device_tokens") < text.index('exec "$@"')


# --- gunicorn configuration ----------------------------------------------------------


def load_gunicorn_conf(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    for name in list(os.environ):
        if name.startswith(("GUNICORN_", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))


def test_gunicorn_conf_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_gunicorn_conf(monkeypatch)
    cpus = len(os.sched_getaffinity(0))
    assert conf["worker_class"] == "sync"
    assert conf["workers"] == min(9, 2 * cpus + 1)
    assert conf["threads"] == 1
    assert conf["timeout"] == 30
    assert conf["graceful_timeout"] < conf["timeout"]
    assert conf["max_requests"] > 0 and 0 < conf["max_requests_jitter"] < conf["max_requests"]
    assert conf["forwarded_allow_ips"] == "127.0.0.1,::1"
    assert conf["bind"] == ["0.0.0.0:8000"]
    assert conf["accesslog"] == "-"


def test_gunicorn_conf_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = load_gunicorn_conf(
        monkeypatch,
        WEB_CONCURRENCY="7",
        GUNICORN_TIMEOUT="45",
        GUNICORN_WORKER_CLASS="gthread",
        GUNICORN_BIND="127.0.0.1:8001",
        GUNICORN_ACCESS_LOG="",
    )
    assert conf["workers"] == 7
    assert conf["timeout"] == 45
    assert conf["worker_class"] == "gthread"
    assert conf["threads"] == 4
    assert conf["bind"] == ["127.0.0.1:8001"]
    assert conf["accesslog"] is None
    # Without WEB_CONCURRENCY, gthread gets one process per CPU (2..8).
    conf = load_gunicorn_conf(monkeypatch, GUNICORN_WORKER_CLASS="gthread")
    assert conf["workers"] == min(8, max(2, len(os.sched_getaffinity(0))))


def test_gunicorn_conf_refuses_bad_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match="WEB_CONCURRENCY"):
        load_gunicorn_conf(monkeypatch, WEB_CONCURRENCY="many")
    with pytest.raises(SystemExit, match="GUNICORN_TIMEOUT"):
        load_gunicorn_conf(monkeypatch, GUNICORN_TIMEOUT="0")


def test_gunicorn_conf_names_are_gunicorn_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A misspelt setting would be ignored silently by gunicorn."""
    from gunicorn.config import KNOWN_SETTINGS

    known = {setting.name for setting in KNOWN_SETTINGS}
    conf = load_gunicorn_conf(monkeypatch)
    ours = {
        name
        for name, value in conf.items()
        if not name.startswith("_")
        and name.islower()
        and not callable(value)
        and not isinstance(value, type(os))
        and name != "annotations"
    }
    assert ours, "nothing read from gunicorn.conf.py"
    assert ours <= known, ours - known


# --- environment examples ------------------------------------------------------------


def consumer_text() -> str:
    """Everything that reads our environment variables."""
    paths = [
        ROOT / "p1platform" / "settings.py",
        *sorted((ROOT / "edgeclient").glob("*.py")),
        DEPLOY / "gunicorn.conf.py",
    ]
    return "\n".join(path.read_text() for path in paths)


@pytest.mark.parametrize("example", [ENV_EXAMPLE, EDGE_ENV_EXAMPLE], ids=lambda p: p.name)
def test_every_example_variable_is_read(example: Path) -> None:
    python = consumer_text()
    caddyfile = (ROOT / "Caddyfile").read_text()
    unread = []
    for name in sorted(env_names(example)):
        if f'"{name}"' in python or "{$" + name in caddyfile:
            continue
        if name in IMAGE_VARIABLES and name in (DEPLOY / IMAGE_VARIABLES[name]).read_text():
            continue
        unread.append(name)
    assert not unread, f"{example.name} names variables nothing reads: {unread}"


def test_env_example_lists_every_variable_read() -> None:
    settings = (ROOT / "p1platform" / "settings.py").read_text()
    read = set(re.findall(r'env_\w+\(\s*"([A-Z][A-Z0-9_]*)"', settings))
    for path in (ROOT / "edgeclient" / "config.py", ROOT / "edgeclient" / "homewizard.py"):
        read |= set(
            re.findall(r'(?:str|int|seconds|get)\(\s*"([A-Z][A-Z0-9_]*)"', path.read_text())
        )
    gunicorn_conf = (DEPLOY / "gunicorn.conf.py").read_text()
    read |= set(re.findall(r'(?:_int|environ\.get)\(\s*"([A-Z][A-Z0-9_]*)"', gunicorn_conf))
    read |= set(re.findall(r"\{\$([A-Z][A-Z0-9_]*)", (ROOT / "Caddyfile").read_text()))
    assert {"SECRET_KEY", "HW_P1_HOST", "VPS_INGEST_URL", "WEB_CONCURRENCY"} <= read
    # The compose stack sets these for Caddy itself; they are not for the operator.
    read -= {"APP_UPSTREAM"}
    missing = read - env_names(ENV_EXAMPLE)
    assert not missing, f".env.example does not mention: {sorted(missing)}"
