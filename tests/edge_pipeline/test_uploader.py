"""The uploader against the real server process: what each answer does to the spool."""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

import p1wire as wire
from edgeclient.backoff import RETRY_AFTER_MAX_S, parse_retry_after, retry_delay
from edgeclient.cli.run import LoopGuard, upload_round
from edgeclient.config import ConfigError, EdgeConfig
from edgeclient.spool import Spool
from edgeclient.uploader import (
    AUTH,
    DELIVERED,
    PROBLEM_CONTENT_TYPE,
    QUARANTINED,
    TLS,
    TOO_LARGE,
    UNAVAILABLE,
    UNREACHABLE,
    IngestClient,
    MeterHistorySender,
    Uploader,
    upload_once,
)
from p1common.processes import ROOT, run_server
from tests.edge.stand_in import JSONHandler, serve
from tests.edge_pipeline.conftest import bound_socket, delivered
from tests.samples import BASE_TS, sample, series

db = pytest.mark.django_db(transaction=True)


def edge_config(url: str, token: str, spool: Path, **overrides) -> EdgeConfig:
    values = dict(
        ingest_url=url, device_token=token, ca_bundle=None, spool_path=spool, batch_size=5,
        drain_batch_size=20, upload_interval_s=10.0, backoff_max_s=300.0,
    )  # fmt: skip
    return EdgeConfig(**(values | overrides))


@pytest.fixture
def spool(spool_path):
    with Spool(spool_path) as opened:
        yield opened


@pytest.fixture
def ingest(server, ingest_token):
    with IngestClient(f"{server.url}/v1/ingest", ingest_token) as client:
        yield client


def stamps(samples) -> list[str]:
    return sorted(s["ts"] for s in samples)


# -- retry policy: pure, randomness injected ------------------------------------------


def test_backoff_is_full_jitter_doubling_from_2_s_up_to_the_cap():
    top = [retry_delay(n, lambda: 1.0) for n in range(1, 12)]
    assert top == [2, 4, 8, 16, 32, 60, 60, 60, 60, 60, 60]
    assert [retry_delay(n, lambda: 0.5) for n in (1, 2, 3)] == [1, 2, 4]
    assert retry_delay(5, lambda: 0.0) == 0.0  # full jitter reaches down to zero
    assert retry_delay(10_000, lambda: 1.0, cap_s=30) == 30  # no overflow, own cap


def test_retry_after_wins_over_backoff_and_is_bounded():
    assert retry_delay(1, lambda: 1.0, retry_after_s=15) == 15
    assert retry_delay(9, lambda: 1.0, retry_after_s=0) == 0
    assert retry_delay(1, lambda: 1.0, retry_after_s=10**9) == RETRY_AFTER_MAX_S


def test_retry_after_is_read_as_seconds_or_as_an_http_date_against_the_injected_clock():
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    in_90_s = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after("120", now.timestamp()) == 120
    assert parse_retry_after(in_90_s, now.timestamp()) == 90
    assert parse_retry_after(in_90_s, now.timestamp() + 600) == 0  # already past
    assert parse_retry_after("soon", now.timestamp()) is None
    assert parse_retry_after(None, now.timestamp()) is None


# -- answers of the real server -------------------------------------------------------


@db
def test_a_delivered_batch_deletes_exactly_the_acknowledged_samples(spool, ingest, device):
    samples = series(12)
    spool.add_many(samples)
    result = upload_once(spool, ingest, batch_size=5, drain_batch_size=5)
    assert (result.state, result.sent, result.delivered) == (DELIVERED, 5, 5)
    assert delivered(device) == stamps(samples[:5])
    assert [p.sample for p in spool.oldest(100)] == samples[5:]
    assert spool.status().last_upload_count == 5


@db
def test_a_backlog_drains_in_larger_batches_oldest_first(spool, ingest, device):
    samples = series(50)
    spool.add_many(samples)
    sizes = []
    while spool.depth():
        result = upload_once(spool, ingest, batch_size=5, drain_batch_size=20)
        sizes.append(result.sent)
        # Whatever is delivered is older than whatever still waits.
        assert delivered(device) == stamps(samples[: sum(sizes)])
    assert sizes == [20, 20, 10]


@db
def test_a_422_quarantines_the_bad_samples_and_the_rest_is_delivered(spool, ingest, device):
    samples = series(10)
    samples[3]["energy_export_kwh"] = -1.0
    future = datetime.now(UTC) + timedelta(days=1)
    samples[7] = sample(future)
    spool.add_many(samples)
    result = upload_once(spool, ingest, batch_size=10)
    assert (result.state, result.quarantined, result.delivered) == (QUARANTINED, 2, 0)
    assert delivered(device) == []  # all-or-nothing: the server wrote nothing yet
    result = upload_once(spool, ingest, batch_size=10)
    assert (result.state, result.delivered) == (DELIVERED, 8)
    good = [s for i, s in enumerate(samples) if i not in (3, 7)]
    assert delivered(device) == stamps(good)
    kept = {q["ts"]: q["reason"] for q in spool.quarantined()}
    assert kept == {
        samples[3]["ts"]: "energy_export_kwh: must not be negative",
        samples[7]["ts"]: "ts: is more than 5 minutes in the future",
    }
    assert spool.depth() == 0


def test_a_422_naming_no_sample_quarantines_the_batch_instead_of_looping(spool):
    # The real server cannot be made to answer this to a well-formed batch, so a stub
    # transport plays a future server that refuses the batch as a whole.
    problem = {
        "status": 422,
        "detail": "The batch has invalid samples; nothing was written.",
        "errors": [{"index": None, "field": "firmware", "detail": "is not a known field"}],
    }
    requests = []

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        # problem+json, as the server answers every error (p1common/problems.py).
        return httpx.Response(422, json=problem, headers={"Content-Type": PROBLEM_CONTENT_TYPE})

    spool.add_many(series(3))
    stub = httpx.MockTransport(answer)
    with IngestClient("https://vps.example/v1/ingest", "t", transport=stub) as client:
        result = upload_once(spool, client, batch_size=5)
        assert (result.state, result.quarantined) == (QUARANTINED, 3)
        assert upload_once(spool, client, batch_size=5).state == "idle"
    assert len(requests) == 1
    reasons = {q["reason"] for q in spool.quarantined()}
    assert reasons == {"batch rejected: firmware: is not a known field"}


@db
@pytest.mark.parametrize("token_kind", ["wrong", "read-only"])
def test_a_refused_token_keeps_every_sample_and_reports_the_auth_state(
    spool, server, read_token, device, token_kind
):
    token = read_token if token_kind == "read-only" else "not-a-token"
    spool.add_many(series(4))
    config = edge_config(f"{server.url}/v1/ingest", token, spool.path)
    with IngestClient.from_config(config) as client:
        uploader = Uploader(spool, client, config, random=lambda: 1.0)
        result, delay = uploader.step()
        assert (result.state, delay) == (AUTH, 2.0)
        assert uploader.step()[1] == 4.0  # still refused: backing off
    assert spool.depth() == 4
    status = spool.status()
    assert status.upload_state == AUTH
    assert status.last_error.startswith("HTTP 401" if token_kind == "wrong" else "HTTP 403")


@db
def test_a_413_halves_the_batch_until_the_server_accepts_it(spool, device, ingest_token):
    samples = series(40)
    spool.add_many(samples)
    with run_server(INGEST_THROTTLE_RATE="off", INGEST_MAX_BATCH="8") as small:
        config = edge_config(f"{small.url}/v1/ingest", ingest_token, spool.path)
        with IngestClient.from_config(config) as client:
            uploader = Uploader(spool, client, config)
            states = []
            while spool.depth():
                result, delay = uploader.step()
                states.append((result.state, result.sent))
                if result.remaining > config.batch_size:
                    assert delay == 0.0  # a backlog: no waiting between batches
    assert states[:3] == [(TOO_LARGE, 20), (TOO_LARGE, 10), (DELIVERED, 5)]
    assert {s for s, _ in states[2:]} == {DELIVERED}
    assert delivered(device) == stamps(samples)


@db
def test_429_and_503_are_retried_after_the_servers_retry_after(spool, device, ingest_token):
    spool.add_many(series(3))
    with run_server(INGEST_THROTTLE_RATE="1/min") as throttled:
        config = edge_config(f"{throttled.url}/v1/ingest", ingest_token, spool.path)
        with IngestClient.from_config(config) as client:
            one_by_one = replace(config, batch_size=1, drain_batch_size=1)
            uploader = Uploader(spool, client, one_by_one, random=lambda: 1.0)
            assert uploader.step()[0].state == DELIVERED
            result, delay = uploader.step()
    assert result.state == "throttled"
    assert 0 < delay == result.retry_after_s <= 60
    assert spool.depth() == 2

    dead_db = "postgres://nobody@127.0.0.1:9/none"
    with run_server(DATABASE_URL=dead_db, DB_RETRY_AFTER_S="7") as no_db:
        config = edge_config(f"{no_db.url}/v1/ingest", ingest_token, spool.path)
        with IngestClient.from_config(config) as client:
            result, delay = Uploader(spool, client, config, random=lambda: 1.0).step()
    assert (result.state, delay) == (UNAVAILABLE, 7)
    assert spool.depth() == 2


def test_an_unreachable_server_keeps_everything_and_backs_off(spool):
    spool.add_many(series(3))
    closed = bound_socket()  # bound, never listening: connections are refused
    url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1/ingest"
    config = edge_config(url, "t", spool.path, backoff_max_s=5)
    draws = iter([0.5, 0.25, 1.0, 1.0])
    with closed, IngestClient.from_config(config) as client:
        uploader = Uploader(spool, client, config, random=lambda: next(draws))
        results = [uploader.step() for _ in range(4)]
    assert [r.state for r, _ in results] == [UNREACHABLE] * 4
    assert [d for _, d in results] == [1.0, 1.0, 5.0, 5.0]  # 0.5*2, 0.25*4, cap 5
    assert spool.depth() == 3
    assert spool.status().consecutive_failures == 4


# -- transport security ---------------------------------------------------------------


@db
def test_tls_to_an_unknown_certificate_is_refused_until_its_ca_is_configured(
    spool, device, ingest_token, server_tls
):
    samples = series(3)
    spool.add_many(samples)
    with run_server(certfile=server_tls.cert_file, keyfile=server_tls.key_file) as tls_server:
        url = f"{tls_server.url}/v1/ingest"
        assert url.startswith("https://")
        with IngestClient(url, ingest_token) as client:
            refused = upload_once(spool, client, batch_size=5)
        assert refused.state == TLS
        assert "CERTIFICATE_VERIFY_FAILED" in refused.detail
        assert spool.depth() == 3

        env = {"VPS_INGEST_URL": url, "VPS_DEVICE_TOKEN": ingest_token}
        config = EdgeConfig.from_env(env | {"VPS_CA_BUNDLE": str(server_tls.ca_file)}, meter=False)
        with IngestClient.from_config(config) as client:
            accepted = upload_once(spool, client, batch_size=5)
    assert accepted.state == DELIVERED
    assert delivered(device) == stamps(samples)


@pytest.mark.parametrize(
    "url",
    ["http://vps.example.com/v1/ingest", "http://192.168.1.10:8000/v1/ingest", "http://[fe80::1]/"],
)
def test_plain_http_to_a_host_that_is_not_loopback_is_refused(url):
    env = {"VPS_INGEST_URL": url, "VPS_DEVICE_TOKEN": "t"}
    with pytest.raises(ConfigError, match=r"^VPS_INGEST_URL: plain http is only allowed"):
        EdgeConfig.from_env(env, meter=False)
    with pytest.raises(ConfigError, match=r"^VPS_INGEST_URL"):
        IngestClient(url, "t")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1/ingest",
        "http://127.3.2.1/",
        "http://[::1]:80/",
        "http://localhost/",
    ],
)
def test_plain_http_to_loopback_is_allowed_for_development(url):
    env = {"VPS_INGEST_URL": url, "VPS_DEVICE_TOKEN": "t"}
    endpoint = EdgeConfig.from_env(env, meter=False).ingest_url
    assert endpoint == url.rstrip("/").removesuffix("/v1/ingest") + "/v1/ingest"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VPS_INGEST_URL", "ftp://vps.example/v1/ingest"),
        ("BATCH_SIZE", "zero"),
        ("BATCH_SIZE", "0"),
        ("POLL_INTERVAL_S", "-1"),
        ("UPLOAD_INTERVAL_S", "nan"),
        ("VPS_CA_BUNDLE", "/nonexistent/ca.pem"),
        ("VPS_CA_BUNDLE", str(ROOT / "pyproject.toml")),
        ("HW_P1_API", "v3"),
    ],
)
def test_each_bad_setting_is_one_error_naming_its_variable(name, value, tmp_path):
    env = {
        "VPS_INGEST_URL": "https://vps.example/v1/ingest",
        "VPS_DEVICE_TOKEN": "t",
        "HW_P1_HOST": "127.0.0.1:8080",
        "EDGE_SPOOL_PATH": str(tmp_path / "spool.sqlite3"),
    }
    with pytest.raises(ConfigError) as raised:
        EdgeConfig.from_env(env | {name: value})
    assert str(raised.value).startswith(f"{name}: ")
    assert "\n" not in str(raised.value)


def test_no_edge_upload_code_switches_certificate_verification_off():
    pattern = re.compile(
        r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|_create_unverified"
    )
    files = ["config.py", "spool.py", "uploader.py", "backoff.py", "poller.py"]
    files += ["management/commands/run_edge.py", "management/commands/edge_status.py"]
    files += ["cli/__init__.py", "cli/run.py", "cli/status.py"]  # where their code is now
    for name in files:
        text = (ROOT / "edgeclient" / name).read_text()
        assert not pattern.search(text), name


def test_the_body_is_the_wire_batch_payload(spool):
    bodies = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        assert request.headers["Authorization"] == "Bearer secret-token"
        return httpx.Response(200, json={"received": 2, "inserted": 2, "duplicates": 0})

    samples = series(2, start=BASE_TS)
    spool.add_many(samples)
    stub = httpx.MockTransport(answer)
    with IngestClient("https://vps.example/v1/ingest", "secret-token", transport=stub) as client:
        assert upload_once(spool, client, batch_size=5).delivered == 2
    assert bodies == [{"samples": samples}]


# -- the meter's history beside the samples -----------------------------------------

# A telegram read as edgeclient.history spools it (p1wire.meter_history_payload).
METER_HISTORY = wire.meter_history_payload(
    read_at="2026-04-02T12:00:00+02:00",
    months=[{"month": "2026-03", "peak_kw": 3.1, "peak_ts": "2026-03-10T18:15:00+01:00"}],
    current=None,
)


def history_pending(path: Path) -> bool:
    """Read apart from the spool's code: the body may be one it cannot read."""
    with closing(sqlite3.connect(path)) as db:
        query = "SELECT count(*) FROM meter_history WHERE sent_at IS NULL"
        return db.execute(query).fetchone()[0] == 1


def upload_rounds(uploader, history, count=None):
    """(delay, samples pending, history pending) after each round, until the spool is empty
    and the history sent, or ``count`` rounds."""
    guard, rounds = LoopGuard("upload"), []
    while count is None or len(rounds) < count:
        delay = upload_round(uploader, history, guard)
        rounds.append((delay, uploader.spool.depth(), history_pending(uploader.spool.path)))
        if count is None and rounds[-1][1:] == (0, False):
            break
        assert len(rounds) < 50, rounds
    return rounds


@db
def test_the_meter_history_waits_until_a_backlog_has_drained(spool, server, device, ingest_token):
    spool.add_many(series(18))
    spool.put_meter_history(METER_HISTORY)
    config = edge_config(f"{server.url}/v1/ingest", ingest_token, spool.path, drain_batch_size=5)
    with IngestClient.from_config(config) as client:
        history = MeterHistorySender(spool, client, config)
        rounds = upload_rounds(Uploader(spool, client, config), history)
    # Batch after batch with nothing in between; the history once the samples caught up.
    assert rounds == [(0.0, 13, True), (0.0, 8, True), (10.0, 3, False), (10.0, 0, False)]
    assert history.failures == 0


@db
def test_a_failing_meter_history_never_slows_the_samples(spool, server, device, ingest_token):
    spool.add_many(series(3))
    spool.put_meter_history(METER_HISTORY)
    # A spool row that cannot be read back: an error other than UploadError, as a
    # "database is locked" would be, raised on every attempt to send the history.
    with closing(sqlite3.connect(spool.path)) as db, db:
        db.execute("UPDATE meter_history SET body = 'not json'")
    config = edge_config(
        f"{server.url}/v1/ingest", ingest_token, spool.path, batch_size=1, drain_batch_size=1
    )
    ticks = [0.0]
    with IngestClient.from_config(config) as client:
        uploader = Uploader(spool, client, config)
        history = MeterHistorySender(
            spool, client, config, random=lambda: 1.0, monotonic=lambda: ticks[0]
        )
        rounds = upload_rounds(uploader, history, count=4)
        assert [delay for delay, *_ in rounds] == [0.0, 10.0, 10.0, 10.0]  # no pause
        assert [depth for _, depth, _ in rounds] == [2, 1, 0, 0]
        assert (uploader.failures, history.failures) == (0, 1)  # the retry waits its backoff
        ticks[0] += 2.0
        upload_rounds(uploader, history, count=1)
        assert (uploader.failures, history.failures) == (0, 2)
    assert len(delivered(device)) == 3


class _Down(JSONHandler):
    """A server in maintenance: 503 to every request, each path noted."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(503)
        body = b'{"title": "Service Unavailable", "status": 503}'
        self.send_header("Content-Type", PROBLEM_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_while_the_server_is_down_only_the_samples_are_retried(spool):
    spool.add_many(series(3))
    spool.put_meter_history(METER_HISTORY)
    down = ThreadingHTTPServer(("127.0.0.1", 0), _Down)
    down.paths = []  # type: ignore[attr-defined]
    serve(down)
    config = edge_config(f"http://127.0.0.1:{down.server_address[1]}/v1/ingest", "t", spool.path)
    try:
        with IngestClient.from_config(config) as client:
            uploader = Uploader(spool, client, config, random=lambda: 1.0)
            history = MeterHistorySender(spool, client, config)
            rounds = upload_rounds(uploader, history, count=3)
    finally:
        down.shutdown()
        down.server_close()
    assert [delay for delay, *_ in rounds] == [2.0, 4.0, 8.0]  # the samples' own backoff
    assert down.paths == ["/v1/ingest"] * 3  # no second request (and timeout) beside each
    assert history_pending(spool.path)
