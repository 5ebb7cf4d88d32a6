"""VPS_INGEST_URL: the server's base URL or the full ingest URL; an answer that is not
the ingest API's is named as such, never taken for a refused token (issue 11, point 7).

The real server (gunicorn, p1common.processes) shows what the ingest API answers; a small
local server plays what else can sit at a mistyped URL: a login page, a web server's
404/405, a captive portal.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgeclient.config import ConfigError, EdgeConfig, ingest_endpoint
from edgeclient.spool import Spool
from edgeclient.uploader import (
    AUTH,
    BAD_RESPONSE,
    CONFIG_STATES,
    DELIVERED,
    NOT_INGEST_API,
    IngestClient,
    Uploader,
    upload_once,
)
from tests.edge_pipeline.conftest import delivered
from tests.edge_pipeline.test_uploader import edge_config, stamps
from tests.samples import series

db = pytest.mark.django_db(transaction=True)

BASE_FORMS = [
    "{base}",
    "{base}/",
    "{base}/v1",
    "{base}/v1/",
    "{base}/v1/ingest",
    "{base}/v1/ingest/",
]


@pytest.fixture
def spool(spool_path) -> Iterator[Spool]:
    with Spool(spool_path) as opened:
        yield opened


def from_env(url: str, token: str = "any") -> EdgeConfig:  # noqa: S107
    return EdgeConfig.from_env({"VPS_INGEST_URL": url, "VPS_DEVICE_TOKEN": token}, meter=False)


# -- the URL itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("https://vps.example", "https://vps.example/v1/ingest"),
        ("https://vps.example/", "https://vps.example/v1/ingest"),
        ("https://vps.example/p1", "https://vps.example/p1/v1/ingest"),
        ("https://vps.example/p1/", "https://vps.example/p1/v1/ingest"),
        ("https://vps.example:8443/a/b", "https://vps.example:8443/a/b/v1/ingest"),
        ("https://vps.example/v1", "https://vps.example/v1/ingest"),
        ("https://vps.example/v1/ingest", "https://vps.example/v1/ingest"),
        ("https://vps.example/v1/ingest/", "https://vps.example/v1/ingest"),
        ("https://vps.example/p1/v1/ingest", "https://vps.example/p1/v1/ingest"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1/ingest"),
    ],
)
def test_the_base_url_or_the_full_ingest_url_give_the_same_endpoint(url, endpoint):
    assert ingest_endpoint(url) == endpoint
    assert from_env(url).ingest_url == endpoint
    with IngestClient(url, "t") as client:
        assert client.url == endpoint


@pytest.mark.parametrize("url", ["https://vps.example/?x=1", "https://vps.example/#top"])
def test_a_url_with_a_query_or_fragment_is_refused(url):
    with pytest.raises(ConfigError, match=r"^VPS_INGEST_URL: .*without \?query or #fragment"):
        from_env(url)


@db
@pytest.mark.parametrize("form", BASE_FORMS)
def test_each_form_of_the_url_delivers_to_the_real_server(
    spool, server, ingest_token, device, form
):
    samples = series(3)
    spool.add_many(samples)
    config = from_env(form.format(base=server.url), ingest_token)
    with IngestClient.from_config(config) as client:
        assert upload_once(spool, client, batch_size=5).state == DELIVERED
    assert delivered(device) == stamps(samples)


@db
@pytest.mark.parametrize("path", ["/p1", "/admin", "/dashboard"])
def test_a_wrong_prefix_on_the_real_server_is_not_the_ingest_api(spool, server, ingest_token, path):
    # /p1/v1/ingest: the site's 404 page; /admin/v1/ingest: the admin's CSRF-guarded
    # pages answer a token-carrying POST with an HTML 403 -- neither is "auth".
    spool.add_many(series(3))
    config = from_env(server.url + path, ingest_token)
    with IngestClient.from_config(config) as client:
        result = upload_once(spool, client, batch_size=5)
    assert result.state == NOT_INGEST_API, result.detail
    assert result.detail.startswith("VPS_INGEST_URL does not point at the ingest API: ")
    assert f"POST {server.url}{path}/v1/ingest answered HTTP" in result.detail
    assert spool.depth() == 3 and spool.quarantined() == []
    assert spool.status().upload_state == NOT_INGEST_API


@db
def test_a_refused_token_from_the_real_server_stays_auth(spool, server):
    spool.add_many(series(2))
    with IngestClient(server.url, "not-a-token") as client:
        result = upload_once(spool, client, batch_size=5)
    assert result.state == AUTH
    assert result.detail.startswith("HTTP 401")


# -- what else may answer at the URL --------------------------------------------------

LOGIN_PAGE = b"<!doctype html><title>Sign in</title><form method=post><input name=password>"


@dataclass
class Answer:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class OtherSite:
    """Answers every POST with ``answer``; remembers the paths it was sent."""

    answer: Answer
    paths: list[str] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def other_site() -> Iterator[OtherSite]:
    site = OtherSite(Answer(404))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            """Silent: the test reads what it answered, not the log."""

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            site.paths.append(self.path)
            answer = site.answer
            self.send_response(answer.status)
            if answer.body:
                self.send_header("Content-Type", answer.content_type)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield site
    httpd.shutdown()
    httpd.server_close()
    thread.join()


NOT_THE_API = {
    "a login page's 403": Answer(403, LOGIN_PAGE),
    "a basic-auth 401": Answer(401, b"Unauthorized", "text/plain",
                               {"WWW-Authenticate": 'Basic realm="router"'}),
    "a web server's 404": Answer(404, b"<html><h1>Not Found</h1></html>"),
    "a JSON 404": Answer(404, b'{"detail": "Not found"}', "application/json"),
    "a 405 of a static site": Answer(405, b"<html>405 Not Allowed</html>",
                                     headers={"Allow": "GET"}),
    "a redirect to a login": Answer(302, headers={"Location": "/login?next=/v1/ingest"}),
    "a captive portal's 200": Answer(200, b"<html>Welcome to the hotel Wi-Fi</html>"),
    "a 200 JSON without a receipt": Answer(200, b'{"ok": true}', "application/json"),
    "a 422 that is not problem+json": Answer(422, b"<html>Unprocessable</html>"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(NOT_THE_API))
def test_an_answer_that_is_not_the_ingest_apis_is_named_so_and_keeps_every_sample(
    spool, other_site, case
):
    other_site.answer = NOT_THE_API[case]
    samples = series(4)
    spool.add_many(samples)
    config = edge_config(other_site.url, "t", spool.path)
    with IngestClient.from_config(config) as client:
        result, delay = Uploader(spool, client, config, random=lambda: 1.0).step()
    assert result.state == NOT_INGEST_API
    assert result.detail.startswith("VPS_INGEST_URL does not point at the ingest API: ")
    assert f"answered HTTP {other_site.answer.status}" in result.detail
    assert delay == 2.0  # backed off like any failure
    assert [p.sample for p in spool.oldest(10)] == samples  # nothing deleted
    assert spool.quarantined() == []  # nothing quarantined on a stranger's word
    assert NOT_INGEST_API in CONFIG_STATES


def test_a_prefixed_base_url_posts_under_the_prefix(spool, other_site):
    spool.add_many(series(2))
    with IngestClient(other_site.url + "/p1/", "t") as client:
        upload_once(spool, client, batch_size=5)
    assert other_site.paths == ["/p1/v1/ingest"]


def test_a_receipt_for_another_count_is_a_bad_response_not_a_wrong_url(spool, other_site):
    other_site.answer = Answer(200, json.dumps({"received": 1}).encode(), "application/json")
    spool.add_many(series(3))
    with IngestClient(other_site.url, "t") as client:
        result = upload_once(spool, client, batch_size=5)
    assert result.state == BAD_RESPONSE
    assert spool.depth() == 3


def test_the_log_says_the_url_is_wrong_once_not_upload_failing_auth(spool, other_site, caplog):
    other_site.answer = NOT_THE_API["a login page's 403"]
    spool.add_many(series(2))
    config = edge_config(other_site.url, "t", spool.path)
    with IngestClient.from_config(config) as client, caplog.at_level("WARNING"):
        uploader = Uploader(spool, client, config, random=lambda: 0.0)
        for _ in range(3):
            uploader.step()
    lines = [r.getMessage() for r in caplog.records if r.name == "edgeclient.uploader"]
    assert len(lines) == 1
    assert lines[0].startswith(
        "upload failing (not_ingest_api): VPS_INGEST_URL does not point at the ingest API"
    )
    assert "(auth)" not in caplog.text
