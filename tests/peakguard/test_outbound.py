"""The outbound client refuses private targets, never follows redirects, keeps TLS on the
host name while dialling the vetted address, and bounds every request in time."""

from __future__ import annotations

import ipaddress
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from peakguard import outbound
from peakguard.outbound import WebhookFailed, WebhookRefused
from tests.peakguard.receivers import Receiver, never_answers, raw_server, trickles
from tests.tools import need

BODY = b'{"hello":"peak"}'


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://127.1.2.3/hook",
        "https://10.0.0.8/hook",
        "https://172.16.5.4/hook",
        "https://172.31.255.1/hook",
        "https://192.168.1.20:8123/api/webhook/x",
        "https://169.254.169.254/latest/meta-data/",
        "https://169.254.10.10/",
        "https://100.64.0.1/",
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "https://[fe80::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:10.0.0.1]/hook",
        "https://[64:ff9b::a00:1]/hook",
        "https://[2002:7f00:1::]/hook",
        "https://0.0.0.0/hook",
        "https://[::]/hook",
        "https://224.0.0.1/hook",
        "https://240.0.0.1/hook",
        "https://localhost/hook",
        "https://2130706433/hook",
    ],
)
def test_private_and_special_targets_are_refused(url):
    with pytest.raises(WebhookRefused, match=r" is an? [a-z -]+ address"):
        outbound.vet(url, allow_private=False)


def test_public_address_passes_the_check():
    target = outbound.vet("https://93.184.215.14:8443/hooks/p1", allow_private=False)
    assert target.addresses == (ipaddress.ip_address("93.184.215.14"),)
    assert (target.host, target.port) == ("93.184.215.14", 8443)
    assert outbound.vet("https://[2606:4700::1111]/", allow_private=False).port == 443


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://93.184.215.14/hook", "plain http:// is not allowed"),
        ("ftp://93.184.215.14/hook", "scheme 'ftp' is not allowed"),
        ("https://user:pw@93.184.215.14/", "credentials in the URL"),
        ("https:///nohost", "names no host"),
        ("https://93.184.215.14:99999/", "not a valid URL"),
        ("https://93.184.215.14/" + "a" * 600, "longer than 500"),
    ],
)
def test_malformed_or_insecure_urls_are_refused(url, message):
    with pytest.raises(WebhookRefused, match=message):
        outbound.vet(url, allow_private=False)


def test_allow_private_opens_lan_and_loopback_but_never_metadata():
    assert outbound.vet("https://192.168.1.20/", allow_private=True)
    assert outbound.vet("https://[fd00::1]/", allow_private=True)
    with pytest.raises(WebhookRefused, match="metadata"):
        outbound.vet("https://169.254.169.254/", allow_private=True)
    with pytest.raises(WebhookRefused, match="unspecified"):
        outbound.vet("https://0.0.0.0/", allow_private=True)


def test_plain_http_only_to_loopback_even_when_private_targets_are_allowed():
    assert outbound.vet("http://127.0.0.1:9/hook", allow_private=True)
    with pytest.raises(WebhookRefused, match="only allowed to a loopback"):
        outbound.vet("http://192.168.1.20/hook", allow_private=True)


def test_refused_target_is_never_contacted():
    with Receiver() as receiver:
        with pytest.raises(WebhookRefused, match="loopback"):
            outbound.post_json(
                receiver.url.replace("http:", "https:"), BODY, {}, allow_private=False
            )
        with pytest.raises(WebhookRefused, match="plain http"):
            outbound.post_json(receiver.url, BODY, {}, allow_private=False)
    assert receiver.received == []


def test_post_reaches_an_allowed_receiver_with_headers_and_body():
    with Receiver() as receiver:
        answer = outbound.post_json(
            receiver.url, BODY, {"User-Agent": "test-agent"}, allow_private=True
        )
    assert answer.status == 204
    (request,) = receiver.received
    assert request.body == BODY
    assert request.headers["User-Agent"] == "test-agent"
    assert request.headers["Content-Type"] == "application/json"


def test_redirect_is_a_failure_and_is_not_followed():
    with Receiver() as inner:
        with Receiver([302], extra_headers={"Location": inner.url}) as outer:
            with pytest.raises(WebhookFailed, match=r"302 .*never followed"):
                outbound.post_json(outer.url, BODY, {}, allow_private=True)
        assert len(outer.received) == 1
    assert inner.received == []


def test_error_answer_is_a_failure_naming_the_status():
    with Receiver([503]) as receiver:
        with pytest.raises(WebhookFailed, match="answered 503"):
            outbound.post_json(receiver.url, BODY, {}, allow_private=True)


def test_receiver_that_never_answers_times_out_within_the_constant():
    release = threading.Event()
    with raw_server(never_answers(release)) as port:
        started = time.monotonic()
        with pytest.raises(WebhookFailed, match="Timeout"):
            outbound.post_json(f"http://127.0.0.1:{port}/", BODY, {}, allow_private=True)
        elapsed = time.monotonic() - started
        release.set()
    assert outbound.TIMEOUT_S - 0.2 <= elapsed < outbound.TIMEOUT_S + 1.5


def test_trickling_receiver_cannot_stretch_the_total_time_limit():
    release = threading.Event()
    with raw_server(trickles(release, step_s=0.05)) as port:
        started = time.monotonic()
        with pytest.raises(WebhookFailed, match="Timeout"):
            outbound.post_json(
                f"http://127.0.0.1:{port}/", BODY, {}, allow_private=True, timeout_s=1.0
            )
        elapsed = time.monotonic() - started
        release.set()
    assert elapsed < 2.5


def test_only_a_small_part_of_the_answer_is_read():
    def big_answer(conn):
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1_000_000)

    with raw_server(big_answer) as port:
        answer = outbound.post_json(f"http://127.0.0.1:{port}/", BODY, {}, allow_private=True)
    assert answer.status == 200
    assert len(answer.body) == outbound.MAX_BODY_BYTES


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    openssl = need("openssl", "openssl")
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def _tls_receiver(cert: Path, key: Path) -> Receiver:
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    return Receiver(tls=server_context)


def test_tls_is_verified_against_the_host_name_while_the_vetted_address_is_dialled(tmp_path):
    cert, key = _self_signed(tmp_path, "localhost")
    trust = ssl.create_default_context(cafile=str(cert))
    with _tls_receiver(cert, key) as receiver:
        answer = outbound.post_json(receiver.url, BODY, {}, allow_private=True, ssl_context=trust)
    assert answer.status == 204
    assert receiver.received[0].headers["Host"] == f"localhost:{receiver.port}"


def test_certificate_for_another_name_fails(tmp_path):
    cert, key = _self_signed(tmp_path, "elsewhere.test")
    trust = ssl.create_default_context(cafile=str(cert))
    with _tls_receiver(cert, key) as receiver:
        with pytest.raises(WebhookFailed, match=r"(?i)certificate"):
            outbound.post_json(receiver.url, BODY, {}, allow_private=True, ssl_context=trust)
    assert receiver.received == []
