"""/metrics (issue 15, point 2): a real gunicorn with two workers and the shipped
deploy/gunicorn.conf.py, scraped over HTTP and parsed with prometheus_client's own
parser of the text format (https://prometheus.io/docs/instrumenting/exposition_formats/);
the edge's textfile for node_exporter's textfile collector, parsed the same way.
"""

from __future__ import annotations

import json
import os
import runpy
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from pathlib import Path

import httpx
import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from edgeclient.cli import status as edge_status
from edgeclient.spool import Spool
from integrations import export
from integrations.metrics import DatabaseCollector
from p1common.processes import child_env, run_server
from telemetry.models import Device, Sample
from telemetry.pipeline import accept_batch
from telemetry.tokens import issue_token
from tests.conftest import bearer
from tests.samples import sample

ROOT = Path(__file__).resolve().parents[2]
METRICS_TOKEN = secrets.token_urlsafe(32)
LATENCY_COUNT = "p1_http_request_duration_seconds_count"


@pytest.fixture(scope="module")
def metrics_server(django_db_setup, tmp_path_factory):
    with run_server(
        workers=2,
        threads=None,
        config=ROOT / "deploy" / "gunicorn.conf.py",
        METRICS_TOKEN=METRICS_TOKEN,
        METRICS_ALLOW_IPS=None,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path_factory.mktemp("metrics")),
        INGEST_THROTTLE_RATE="off",
        BAD_TOKEN_RATE="off",
        GUNICORN_ACCESS_LOG="",
    ) as proc:
        yield proc


def scrape(server, token: str = METRICS_TOKEN) -> dict[tuple[str, tuple], float]:
    response = httpx.get(f"{server.url}/metrics", headers=bearer(token), timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


@pytest.mark.django_db(transaction=True)
def test_metrics_are_closed_without_the_token(metrics_server):
    for headers in ({}, bearer("not-the-token-" + "x" * 30)):
        response = httpx.get(f"{metrics_server.url}/metrics", headers=headers, timeout=10)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert "p1_" not in response.text


@pytest.mark.django_db(transaction=True)
def test_ingest_counters_add_up_over_every_worker(metrics_server, device, ingest_token):
    before = scrape(metrics_server)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    batches = [[sample(start + timedelta(seconds=10 * i + j)) for j in range(3)] for i in range(8)]
    with httpx.Client(timeout=10) as http:
        for batch in batches:
            # A new connection each: the two workers share the batches.
            answer = httpx.post(
                f"{metrics_server.url}/v1/ingest",
                json={"samples": batch},
                headers=bearer(ingest_token),
            )
            assert answer.status_code == 200
        retried = http.post(
            f"{metrics_server.url}/v1/ingest",
            json={"samples": batches[0]},
            headers=bearer(ingest_token),
        )
        assert retried.json()["duplicates"] == 3
        bad_token = http.post(
            f"{metrics_server.url}/v1/ingest",
            json={"samples": batches[0]},
            headers=bearer("x" * 43),
        )
        assert bad_token.status_code == 401
        invalid = http.post(
            f"{metrics_server.url}/v1/ingest",
            json={"samples": [{**batches[0][0], "power_w": "lots"}]},
            headers=bearer(ingest_token),
        )
        assert invalid.status_code == 422
    after = scrape(metrics_server)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew("p1_ingest_batches_total") == 9
    assert grew("p1_ingest_samples_total", result="inserted") == 24
    assert grew("p1_ingest_samples_total", result="duplicate") == 3
    assert grew("p1_ingest_refused_batches_total", reason="bad_token") == 1
    assert grew("p1_ingest_refused_batches_total", reason="invalid_samples") == 1
    assert grew("p1_http_request_duration_seconds_count", route="ingest-list", method="POST") == 11
    newest = batches[-1][-1]["ts"]
    age = after[("p1_device_latest_sample_age_seconds", (("device", device.device_id),))]
    expected = (datetime.now(UTC) - datetime.fromisoformat(newest)).total_seconds()
    assert expected - 30 < age <= expected + 1
    assert after[("p1_ingest_steps_owed_batches", ())] == 0  # no worker: done in the request


@pytest.mark.django_db(transaction=True)
def test_the_export_streams_over_http_in_chunks(metrics_server, device, read_token):
    now = datetime.now(UTC).replace(microsecond=0)
    accept_batch(device, {"samples": [sample(now - timedelta(seconds=i)) for i in range(50)]}, now)
    with httpx.stream(
        "GET",
        f"{metrics_server.url}/v1/export?kind=samples",
        headers=bearer(read_token),
        timeout=10,
    ) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers  # streamed, not rendered first
        lines = b"".join(response.iter_bytes()).decode().splitlines()
    assert len(lines) == 51


@pytest.mark.django_db(transaction=True)
def test_methods_and_paths_a_client_invents_add_no_latency_series(metrics_server):
    def series(figures: dict) -> set[tuple]:
        return {labels for name, labels in figures if name == LATENCY_COUNT}

    before = series(scrape(metrics_server))
    # Anonymous junk: gunicorn passes any method of 3 to 20 upper-case letters on.
    junk = ["".join(chr(ord("A") + int(d)) for d in f"{i:04d}") for i in range(40)]
    with httpx.Client(timeout=10) as http:
        for i, method in enumerate(junk):
            for path in ("/v1/ingest", f"/no-such-path-{i}", "/metrics"):
                assert http.request(method, f"{metrics_server.url}{path}").status_code < 500
    after = series(scrape(metrics_server))
    methods = {dict(labels)["method"] for labels in after}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert len(after - before) <= 3, sorted(after - before)
    assert (("method", "other"), ("route", "unmatched")) in after


def stored(body: dict) -> dict:
    """A wire sample as the model's fields (its moments parsed)."""
    moments = ("ts", "monthly_power_peak_ts", "gas_ts")
    return {k: datetime.fromisoformat(v) if k in moments else v for k, v in body.items()}


@pytest.mark.django_db(transaction=True)
def test_a_sample_export_streams_every_row_over_gunicorn(metrics_server, device, read_token):
    """Every row arrives through a real gunicorn worker. The rate is printed, not
    asserted (a timed test fails on a loaded machine, not on slow code): at the rate
    printed, the largest export allowed must stay well inside GUNICORN_TIMEOUT (30 s)."""
    rows = 20_000
    start = datetime(2026, 1, 5, tzinfo=UTC)
    Sample.objects.bulk_create(
        [
            Sample(device=device, **stored(sample(start + timedelta(seconds=i))))
            for i in range(rows)
        ],
        batch_size=5000,
    )
    query = {
        "kind": "samples",
        "start": start.isoformat(),
        "end": (start + timedelta(days=1)).isoformat(),
    }
    began = time.perf_counter()
    with httpx.stream(
        "GET",
        f"{metrics_server.url}/v1/export",
        params=query,
        headers=bearer(read_token),
        timeout=30,
    ) as response:
        assert response.status_code == 200
        lines = sum(chunk.count(b"\n") for chunk in response.iter_bytes())
    took = time.perf_counter() - began
    assert lines == 1 + rows
    rate = rows / took
    worst = export.MAX_SAMPLE_ROWS / rate
    print(
        f"\nexport: {rate:,.0f} rows/s over HTTP; {export.MAX_SAMPLE_ROWS:,} rows in {worst:.1f} s"
    )


@pytest.mark.django_db
def test_the_backlog_of_owed_ingest_steps_is_reported(device):
    now = datetime(2026, 3, 1, 12, tzinfo=UTC)
    with override_settings(INGEST_STEPS_WORKER=True):
        accept_batch(device, {"samples": [sample(now - timedelta(minutes=1))]}, now)
    figures = {
        family.name: family.samples
        for family in DatabaseCollector(
            now=lambda: datetime.now(UTC) + timedelta(seconds=90)
        ).collect()
    }
    assert figures["p1_ingest_steps_owed_batches"][0].value == 1
    assert 89 <= figures["p1_ingest_steps_owed_age_seconds"][0].value <= 120


@pytest.mark.django_db
def test_an_allowed_network_may_scrape_without_the_token(client, device):
    with override_settings(METRICS_TOKEN="", METRICS_ALLOW_NETWORKS=[ip_network("127.0.0.0/8")]):
        assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
        assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 404
        # Behind Caddy (a trusted proxy) the address is its X-Real-IP.
        proxied = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_REAL_IP="192.0.2.7")
        assert proxied.status_code == 404
    with override_settings(METRICS_TOKEN="", METRICS_ALLOW_NETWORKS=[]):
        assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 404


def test_edge_status_writes_a_textfile_for_node_exporter(tmp_path, monkeypatch):
    spool_path = tmp_path / "spool.sqlite3"
    an_hour_ago = datetime.now(UTC).timestamp() - 3600
    with Spool(spool_path, clock=lambda: an_hour_ago) as spool:
        spool.add(sample(datetime.now(UTC) - timedelta(hours=1)))
        spool.add(sample(datetime.now(UTC) - timedelta(minutes=59)))
        spool.quarantine_reading({"active_power_w": "garbage"}, "edge: power_w: not a number")
    monkeypatch.setenv("EDGE_SPOOL_PATH", str(spool_path))
    textfile = tmp_path / "p1_edge.prom"
    printed: list[str] = []

    class Out:
        def write(self, msg: str = "") -> None:
            printed.append(msg)

        def flush(self) -> None:
            pass

    options = {
        "max_pending_age": 900.0,
        "max_meter_down": 300.0,
        "json": True,
        "textfile": str(textfile),
    }
    assert edge_status.handle(options, Out()) == 1  # an hour old: unhealthy
    report = json.loads(printed[0])
    figures = {
        s.name: s.value
        for family in text_string_to_metric_families(textfile.read_text())
        for s in family.samples
    }
    assert figures["p1_edge_spool_pending_samples"] == report["pending"] == 2
    assert figures["p1_edge_quarantined_samples"] == 1
    assert figures["p1_edge_healthy"] == 0
    assert figures["p1_edge_spool_oldest_pending_age_seconds"] >= 3600
    assert list(tmp_path.glob(".*.tmp")) == []


def test_edge_textfile_figures_over_a_million_are_exact():
    report = {
        "healthy": True,
        "pending": 1_234_567,
        "oldest_pending_age_s": 31_536_000.25,
        "quarantined": 10_000_001,
    }
    figures = {
        s.name: s.value
        for family in text_string_to_metric_families(edge_status.textfile_metrics(report))
        for s in family.samples
    }
    assert figures["p1_edge_spool_pending_samples"] == 1_234_567
    assert figures["p1_edge_spool_oldest_pending_age_seconds"] == 31_536_000.25
    assert figures["p1_edge_quarantined_samples"] == 10_000_001
    assert figures["p1_edge_healthy"] == 1
    assert "p1_edge_spool_pending_samples 1234567\n" in edge_status.textfile_metrics(report)


def gunicorn_conf() -> dict:
    return runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))


def test_start_up_clears_only_prometheus_files_from_an_operator_chosen_directory(
    tmp_path, monkeypatch
):
    chosen = tmp_path / "metrics"
    (chosen / "keep").mkdir(parents=True)
    ours = ["counter_123.db", "histogram_9.db", "gauge_livesum_77.db", "summary_4.db"]
    theirs = ["notes.txt", "backup.db", "counter_x.db", "keep/counter_1.db"]
    for name in ours + theirs:
        (chosen / name).write_text("x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(chosen))
    conf = gunicorn_conf()
    assert conf["prepare_metrics_dir"]() == str(chosen)
    conf["on_exit"](None)
    left = sorted(str(p.relative_to(chosen)) for p in chosen.rglob("*") if p.is_file())
    assert left == sorted(theirs)


def test_without_a_chosen_directory_the_server_makes_its_own_and_removes_it_at_exit(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    conf = gunicorn_conf()
    made = Path(conf["prepare_metrics_dir"](base=str(tmp_path)))
    assert made.parent == tmp_path and made.is_dir()
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(made)
    assert oct(made.stat().st_mode & 0o777) == "0o700"
    conf["on_exit"](None)
    assert not made.exists()


def test_importing_the_metrics_makes_no_directory_and_the_middleware_names_a_missing_one(
    tmp_path,
):
    missing = tmp_path / "no-such-dir"
    script = (
        "import django; django.setup()\n"
        "import integrations.metrics as m\n"
        "import os; print('exists' if os.path.exists(os.environ['PROMETHEUS_MULTIPROC_DIR']) "
        "else 'absent')\n"
        "m.MetricsMiddleware(lambda request: None)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=child_env(PROMETHEUS_MULTIPROC_DIR=str(missing)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == "absent", done.stderr
    assert (
        f"ImproperlyConfigured: PROMETHEUS_MULTIPROC_DIR: {missing} is not a directory"
        in done.stderr
    )
    assert not missing.exists()


def test_a_bad_allow_list_stops_start_up_naming_the_variable(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from p1common.env import env_networks

    monkeypatch.setenv("METRICS_ALLOW_IPS", "127.0.0.1,not-a-network")
    with pytest.raises(ImproperlyConfigured, match="METRICS_ALLOW_IPS: expected addresses"):
        env_networks("METRICS_ALLOW_IPS")


def test_devices_without_samples_have_no_age(db):
    Device.objects.create(device_id="quiet")
    issue_token(Device.objects.get(device_id="quiet"), "read")
    names = [
        s.labels
        for f in DatabaseCollector().collect()
        for s in f.samples
        if f.name.endswith("age_seconds") and s.labels
    ]
    assert names == []
