"""Resident memory of ``manage.py run_edge`` after N minutes, against a bare baseline.

    .venv/bin/python bench/edge_memory.py [--minutes 10] [--database-url postgres://...]

1. A fresh PostgreSQL database is migrated; a device and an ingest token are created;
   gunicorn serves it over HTTPS with a certificate from a private CA made here, which
   run_edge trusts through VPS_CA_BUNDLE: the production upload path, TLS included.
2. ``manage.py simulate_p1`` serves a fake meter over API v2 (verified TLS, token).
3. ``manage.py run_edge`` (P1_ROLE=edge) polls it every second (POLL_INTERVAL_S=1) and
   uploads with the defaults (every 10 s, batches of 30).
4. Baselines in the same run: the RSS of ``python -c "import django, httpx"`` (the
   edge's two dependencies, imported and idle), of the same after ``django.setup()``
   with P1_ROLE=edge (the floor of any manage.py command), and of a bare interpreter.
RSS is VmRSS from /proc/<pid>/status, sampled every 10 s; the peak is VmHWM.
Goal: below 50 MB after 10 minutes (the design's limit), aim 35 MB.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fresh_database  # noqa: E402

SAMPLE_EVERY_S = 10
EDGE_ENV = {"P1_ROLE": "edge", "DJANGO_SETTINGS_MODULE": "p1platform.settings"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/p1bench_edge"
        ),
    )
    return parser.parse_args()


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def baseline_mb(code: str) -> float:
    """RSS of an idle interpreter that ran ``code`` (it waits on stdin until we close it)."""
    process = subprocess.Popen(
        [sys.executable, "-c", code + "\nimport sys\nprint('ready', flush=True)\nsys.stdin.read()"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    value = rss_mb(process.pid)
    process.stdin.close()
    process.wait(10)
    return value


def make_server_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """(CA file, certificate, key) for 127.0.0.1, made with the openssl CLI."""
    ca_key, ca, key = folder / "ca.key", folder / "ca.pem", folder / "server.key"
    csr, cert, ext = folder / "server.csr", folder / "server.pem", folder / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for args in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=bench CA"],
        ["req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
    return ca, cert, key


def start_simulator(folder: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    command = [sys.executable, "manage.py", "simulate_p1", "--port", "0", "--api", "v2"]
    command += ["--cert-dir", str(folder / "certs")]
    process = subprocess.Popen(
        command, cwd=ROOT, env=os.environ | EDGE_ENV, stdout=subprocess.PIPE, text=True
    )
    settings: dict[str, str] = {"HW_P1_API": "v2"}
    assert "simulated P1 meter" in process.stdout.readline()
    while "HW_P1_SERIAL" not in settings:
        name, _, value = process.stdout.readline().strip().partition("=")
        settings[name] = value
    return process, settings


def main() -> None:
    args = parse_args()
    fresh_database(args.database_url)
    from telemetry.models import Device, Sample
    from telemetry.tokens import issue_token
    from tests.serverproc import run_server

    device = Device.objects.create(device_id="bench-edge")
    token = issue_token(device, "ingest")[1]

    bare = baseline_mb("pass")
    deps = baseline_mb("import django, httpx")
    # What any manage.py command costs before it runs a line of its own: django.setup()
    # imports django.urls -> django.http -> the ORM, whatever the installed apps are.
    setup = baseline_mb(
        "import os\nos.environ.update(P1_ROLE='edge', DJANGO_SETTINGS_MODULE='p1platform.settings')"
        "\nimport django, httpx\ndjango.setup()"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ca, cert, key = make_server_certificate(folder)
        with run_server(workers=1, threads=2, certfile=cert, keyfile=key) as server:
            env = {
                "VPS_INGEST_URL": f"{server.url}/v1/ingest",
                "VPS_DEVICE_TOKEN": token,
                "VPS_CA_BUNDLE": str(ca),
                "EDGE_SPOOL_PATH": str(folder / "spool.sqlite3"),
                "POLL_INTERVAL_S": "1",
                "LOG_LEVEL": "warning",
            }
            code, readings, peak = run_edge(env, folder, args.minutes)
    delivered = Sample.objects.filter(device=device).count()

    (first_at, first), (_, final) = readings[0], readings[-1]
    print(f"run_edge, POLL_INTERVAL_S=1, {args.minutes:g} min against simulate_p1 (API v2, TLS),")
    print("uploading over HTTPS (private CA in VPS_CA_BUNDLE) to gunicorn on PostgreSQL")
    print(f"samples delivered to the server: {delivered}; run_edge exit code on SIGTERM: {code}")
    print(f"RSS after {first_at:.0f} s: {first:.1f} MB; after {args.minutes:g} min: "
          f"{final:.1f} MB; peak (VmHWM): {peak:.1f} MB")  # fmt: skip
    print(f"baseline: python -c 'import django, httpx': {deps:.1f} MB; bare python: {bare:.1f} MB")
    print(f"baseline: the same + django.setup() with P1_ROLE=edge: {setup:.1f} MB")
    print(f"run_edge above django+httpx: {final - deps:.1f} MB; above django.setup(): "
          f"{final - setup:.1f} MB")  # fmt: skip
    print("goal: below 50 MB (aim 35 MB): " + ("met" if final < 50 else "NOT met"))


def run_edge(
    env: dict[str, str], folder: Path, minutes: float
) -> tuple[int, list[tuple[float, float]], float]:
    """simulate_p1 and run_edge for ``minutes``: (exit code, [(s, RSS MB)], peak MB)."""
    simulator, meter_env = start_simulator(folder)
    full_env = os.environ | EDGE_ENV | meter_env | env
    full_env.pop("DATABASE_URL", None)
    edge = subprocess.Popen([sys.executable, "manage.py", "run_edge"], cwd=ROOT, env=full_env)
    readings: list[tuple[float, float]] = []
    try:
        began = time.monotonic()
        duration = minutes * 60
        while (elapsed := time.monotonic() - began) < duration:
            time.sleep(min(SAMPLE_EVERY_S, duration - elapsed))
            if edge.poll() is not None:
                raise SystemExit(f"run_edge exited with {edge.returncode}")
            readings.append((time.monotonic() - began, rss_mb(edge.pid)))
            if len(readings) % 6 == 0:
                print(f"  {readings[-1][0] / 60:4.1f} min: RSS {readings[-1][1]:.1f} MB")
        peak = rss_mb(edge.pid, "VmHWM")
    finally:
        edge.send_signal(signal.SIGTERM)
        code = edge.wait(30)
        simulator.send_signal(signal.SIGTERM)
        simulator.wait(30)
    return code, readings, peak


if __name__ == "__main__":
    main()
