"""Peak resident memory of the edge polling every second and uploading, in an edge-only
install, against the bare interpreter measured in the same run.

    .venv/bin/python bench/edge_memory.py [--minutes 5] [--forms module,manage]
        [--checkout PATH] [--edge-python PATH]

1. An edge-only virtualenv is built in a temporary folder: requirements/edge.txt alone,
   each locked distribution linked from this environment at its locked version (no DRF,
   psycopg or redis: what a Raspberry Pi with the edge image has). ``--edge-python``
   uses an existing one instead.
2. The simulated meter (``python -m edgeclient simulate``, API v2: verified TLS, token)
   runs in a process of its own, not measured.
3. The server is a stand-in in this process: HTTPS with a certificate from a private CA
   made here (the edge trusts it through VPS_CA_BUNDLE, as in production), checking the
   token and acknowledging every batch as the ingest API does (``{"received": n}``).
   The edge's memory does not depend on what the server does with a batch.
4. Each form of the edge, one after the other: ``module`` is ``python -m edgeclient
   run`` (no Django), ``manage`` is ``python manage.py run_edge`` (django.setup() with
   the edge settings). POLL_INTERVAL_S=1, uploads with the defaults (every 10 s,
   batches of 30). ``--checkout`` runs the edge of another checkout (a base commit
   extracted with ``git archive``, say) with the same install, server and meter.
5. Baselines in the same run and install: a bare interpreter, and one that imported
   httpx (the edge's HTTP client) and sits idle.

RSS is VmRSS from /proc/<pid>/status, sampled every 10 s; the peak is VmHWM.
Goal (issue 12): the peak of ``python -m edgeclient run`` at or under 35 MB.
"""

from __future__ import annotations

import argparse
import json
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p1common.edge_install import build_edge_install, edge_env  # noqa: E402
from p1common.processes import (  # noqa: E402
    SimulatorProcess,
    start_child,
    start_simulator,
)

GOAL_MB = 35.0
SAMPLE_EVERY_S = 10
STOP_TIMEOUT_S = 30
# openssl makes the simulator's certificates before it prints its settings.
START_TIMEOUT_S = 60
TOKEN = "bench-edge-token"  # noqa: S105 - the stand-in server's, nothing real
FORMS = {
    "module": ["-m", "edgeclient", "run"],
    "manage": ["manage.py", "run_edge"],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="per form of the edge")
    parser.add_argument(
        "--forms", default="module,manage", help="comma-separated: " + ", ".join(FORMS)
    )
    parser.add_argument(
        "--checkout", type=Path, default=ROOT, help="the edge code to run (default: this one)"
    )
    parser.add_argument("--edge-python", type=Path, help="an edge-only interpreter to use")
    args = parser.parse_args()
    args.forms = [form.strip() for form in args.forms.split(",") if form.strip()]
    unknown = [form for form in args.forms if form not in FORMS]
    if unknown:
        parser.error(f"--forms: unknown {', '.join(unknown)} (choose from {', '.join(FORMS)})")
    return args


# -- the edge-only install ------------------------------------------------------------


def check_edge_only(python: Path) -> None:
    probe = "import importlib.util as u; print([n for n in %r if u.find_spec(n)])"
    server = ("rest_framework", "psycopg", "redis", "django_redis")
    found = subprocess.run(
        [str(python), "-c", probe % (server,)],
        check=True,
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT_S,
    ).stdout.strip()
    if found != "[]":
        raise SystemExit(f"{python} is not an edge-only install: it has {found}")


# -- measuring ------------------------------------------------------------------------


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def baseline_mb(python: Path, code: str) -> float:
    """Peak RSS of an idle interpreter that ran ``code``."""
    probe = code + "\nimport time\nprint('ready', flush=True)\ntime.sleep(3600)"
    child = start_child(f"baseline ({code})", [str(python), "-c", probe], edge_env({}))
    try:
        child.wait_for_line("^ready$", START_TIMEOUT_S)
        return rss_mb(child.pid, "VmHWM")
    finally:
        child.stop(STOP_TIMEOUT_S)


# -- the server stand-in --------------------------------------------------------------


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


class IngestStandIn(ThreadingHTTPServer):
    """Acknowledges every batch POSTed to /v1/ingest with the bench token."""

    daemon_threads = True

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__(("127.0.0.1", 0), _IngestHandler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.received = 0
        self.batches = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def count(self, samples: int) -> None:
        with self._lock:
            self.received += samples
            self.batches += 1


class _IngestHandler(BaseHTTPRequestHandler):
    server: IngestStandIn
    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn behind Caddy

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v1/ingest":
            return self._answer(404, {"title": "Not Found"})
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._answer(401, {"title": "Invalid token."})
        samples = json.loads(body)["samples"]
        self.server.count(len(samples))
        return self._answer(200, {"received": len(samples)})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        kind = "application/json" if status == 200 else "application/problem+json"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """One line per request would drown the bench's own output."""
        return


# -- the meter and the edge -----------------------------------------------------------


def start_meter(python: Path, folder: Path) -> SimulatorProcess:
    """The simulated meter (API v2) of this checkout, in the edge install."""
    return start_simulator(
        api="v2", cert_dir=folder / "meter-certs", env=edge_env({}), python=str(python),
        defaults={},
    )  # fmt: skip


@dataclass
class EdgeRun:
    form: str
    exit_code: int
    readings: list[tuple[float, float]]
    peak_mb: float
    delivered: int


def run_edge(
    python: Path, checkout: Path, form: str, env: dict[str, str], server: IngestStandIn,
    minutes: float,
) -> EdgeRun:  # fmt: skip
    """One form of the edge for ``minutes``, sampled every 10 s, then SIGTERM."""
    before = server.received
    edge = start_child(
        " ".join(FORMS[form]), [str(python), *FORMS[form]], edge_env(env), cwd=checkout, read="none"
    )
    readings: list[tuple[float, float]] = []
    try:
        began = time.monotonic()
        duration = minutes * 60
        while (elapsed := time.monotonic() - began) < duration:
            time.sleep(min(SAMPLE_EVERY_S, duration - elapsed))
            if not edge.running():
                raise SystemExit(f"{' '.join(FORMS[form])} exited with {edge.returncode}")
            readings.append((time.monotonic() - began, rss_mb(edge.pid)))
            if len(readings) % 6 == 0:
                print(f"  {form}: {readings[-1][0] / 60:4.1f} min: RSS {readings[-1][1]:.1f} MB")
        peak = rss_mb(edge.pid, "VmHWM")
    finally:
        edge.stop(STOP_TIMEOUT_S)
    return EdgeRun(form, edge.returncode, readings, peak, server.received - before)


def main() -> None:
    args = parse_args()
    checkout = args.checkout.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        python = args.edge_python or build_edge_install(folder / "edge-venv").python
        check_edge_only(python)
        bare = baseline_mb(python, "pass")
        httpx_only = baseline_mb(python, "import httpx")
        ca, cert, key = make_server_certificate(folder)
        server = IngestStandIn(cert, key)
        threading.Thread(target=server.serve_forever, name="ingest", daemon=True).start()
        simulator = start_meter(python, folder)
        meter_env = simulator.meter_env()
        runs = []
        try:
            for form in args.forms:
                env = meter_env | {
                    "VPS_INGEST_URL": server.url,
                    "VPS_DEVICE_TOKEN": TOKEN,
                    "VPS_CA_BUNDLE": str(ca),
                    "EDGE_SPOOL_PATH": str(folder / f"spool-{form}.sqlite3"),
                    "DATA_DIR": str(folder / f"data-{form}"),
                    "POLL_INTERVAL_S": "1",
                    "LOG_LEVEL": "warning",
                }
                runs.append(run_edge(python, checkout, form, env, server, args.minutes))
        finally:
            simulator.stop(STOP_TIMEOUT_S)
            server.shutdown()
            server.server_close()
    report(args, checkout, runs, bare, httpx_only)


def report(
    args: argparse.Namespace, checkout: Path, runs: list[EdgeRun], bare: float, httpx_only: float
) -> None:
    where = "" if checkout == ROOT else f" (checkout {checkout})"
    print(f"edge-only install (requirements/edge.txt){where}; POLL_INTERVAL_S=1, uploads every")
    print(f"10 s over HTTPS (private CA) to an ingest stand-in; {args.minutes:g} min per form")
    print(f"baseline: bare python: {bare:.1f} MB; python -c 'import httpx': {httpx_only:.1f} MB")
    for run in runs:
        (first_at, first), (_, final) = run.readings[0], run.readings[-1]
        print(f"python {' '.join(FORMS[run.form])}: samples acknowledged {run.delivered}, "
              f"exit code on SIGTERM {run.exit_code}")  # fmt: skip
        print(f"  RSS after {first_at:.0f} s: {first:.1f} MB; at the end: {final:.1f} MB")
        print(f"  peak (VmHWM): {run.peak_mb:.1f} MB = bare python + {run.peak_mb - bare:.1f} MB")
        if run.form == "module":
            verdict = "met" if run.peak_mb <= GOAL_MB else "NOT met"
            print(f"  goal: peak at or under {GOAL_MB:g} MB: {verdict}")


if __name__ == "__main__":
    main()
