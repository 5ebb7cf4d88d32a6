"""TLS to the meter with certificates shaped like the real ones, on Python 3.11 to 3.13.

Real handshakes through HomeWizardClient against a small TLS listener in this process,
with certificates made by ``openssl`` (edgeclient/simcerts.py). The file needs neither
the server's Django apps nor the suite's conftests: .ci/run also runs it on Python 3.13
in an edge-only virtualenv with ``pytest --noconftest``.

Sources for the shapes:
- certs/homewizard-ca-cert.pem is HomeWizard's CA as published with the API docs
  (github:homewizard/api-documentation static/homewizard-ca-cert.pem, commit e1a1271;
  byte-identical to python-homewizard-energy homewizard_energy/v2/cacert.py).
- The device certificate's names, serial number and validity are those a real P1 meter
  presented in github:homewizard/api-documentation issue #241.
- DEVICE_ANSWER is the example answer of GET /api in docs/v2/device_information.mdx.
"""

from __future__ import annotations

import json
import queue
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgeclient.homewizard import HomeWizardClient, MeterConfig, MeterTLSError
from edgeclient.meter_tls import (
    CertificateNames,
    PinnedCertificate,
    ca_context,
    device_name,
    fingerprint,
    pinned_context,
)
from edgeclient.pairing import fetch_certificate
from edgeclient.simcerts import ensure_certificates, issue_device_certificate
from tests.tools import need

REAL_CA = Path(__file__).parent / "certs" / "homewizard-ca-cert.pem"
REAL_CA_SHA256 = "4ec277e62033fae8bc373e3f2a976676d3f665683873f1ea8e3bdf78ac680003"
SERIAL = "5c2fafaabbcc"  # the serial of the docs' examples and of issue #241
OTHER_SERIAL = "5c2fafddeeff"
TOKEN = "1234567890ABCDEF1234567890ABCDEF"
DEVICE_ANSWER = {
    "product_name": "P1 Meter",
    "product_type": "HWE-P1",
    "serial": SERIAL,
    "firmware_version": "6.00",
    "api_version": "2.0.0",
}
IO_TIMEOUT_S = 10
SHAPES = ["cn-only", "dns-san"]  # the two device certificates reported in the field


@dataclass(frozen=True)
class Device:
    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Pki:
    devices: dict[str, Device]  # by shape: each with its own simulated HomeWizard CA
    rekeyed: dict[str, Device]  # same CA, serial and shape, new key: a changed certificate
    stranger: Device  # a certificate for SERIAL from a CA that is not the trusted one


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    need("openssl", "openssl")
    root = tmp_path_factory.mktemp("meter-tls")
    devices: dict[str, Device] = {}
    rekeyed: dict[str, Device] = {}
    for shape in SHAPES:
        made = ensure_certificates(root / shape, SERIAL, san=shape == "dns-san")
        devices[shape] = Device(made.ca_file, made.cert_file, made.key_file)
        again = Device(made.ca_file, root / shape / "rekeyed.pem", root / shape / "rekeyed.key")
        issue_device_certificate(
            made.ca_file, root / shape / "ca.key", SERIAL, again.cert_file, again.key_file,
            dns_name=made.dns_name,
        )  # fmt: skip
        rekeyed[shape] = again
    other = ensure_certificates(root / "stranger", SERIAL)
    return Pki(devices, rekeyed, Device(other.ca_file, other.cert_file, other.key_file))


class TinyMeter:
    """A TLS listener that answers GET /api like a P1 meter and records every request.

    ``received`` gets, per connection and once it is over, the request bytes that
    arrived: ``b""`` when the client broke off before sending any.
    """

    def __init__(self, device: Device) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(device.cert_file, device.key_file)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.received: queue.Queue[bytes] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            self.received.put(self._answer(raw))

    def _answer(self, raw: socket.socket) -> bytes:
        request = b""
        raw.settimeout(IO_TIMEOUT_S)
        try:
            with self._context.wrap_socket(raw, server_side=True) as tls:
                while b"\r\n\r\n" not in request:
                    chunk = tls.recv(4096)
                    if not chunk:
                        return request
                    request += chunk
                body = json.dumps(DEVICE_ANSWER).encode()
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"X-Api-Version: 2.0.0\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                tls.sendall(head.encode() + body)
        except OSError:  # incl. ssl.SSLError: the client refused the certificate
            return request  # what arrived before it hung up (the tests expect nothing)
        finally:
            raw.close()
        return request

    def stop(self) -> None:
        # shutdown() wakes the accept() blocked in _serve; close() alone does not.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join(IO_TIMEOUT_S)


@pytest.fixture
def serve() -> Iterator[Callable[[Device], TinyMeter]]:
    started: list[TinyMeter] = []

    def start(device: Device) -> TinyMeter:
        meter = TinyMeter(device)
        started.append(meter)
        return meter

    yield start
    for meter in started:
        meter.stop()


def _ca_config(meter: TinyMeter, ca_file: Path, serial: str = SERIAL) -> MeterConfig:
    return MeterConfig(host=meter.address, api="v2", token=TOKEN, ca_file=ca_file, serial=serial)


def _pinned_config(
    meter: TinyMeter, pin: PinnedCertificate, sha256: str | None = None
) -> MeterConfig:
    return MeterConfig(host=meter.address, api="v2", token=TOKEN, pinned=pin, pinned_sha256=sha256)


def _handshake(context: ssl.SSLContext, meter: TinyMeter, server_name: str) -> None:
    host, port = meter.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=IO_TIMEOUT_S) as raw:
        context.wrap_socket(raw, server_hostname=server_name).close()


# -- the handshake, through the client -------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_ca_mode_accepts_the_device_its_serial_names(pki, serve, shape):
    meter = serve(pki.devices[shape])
    with HomeWizardClient(_ca_config(meter, pki.devices[shape].ca_file)) as client:
        info = client.device_info()
    assert (info.product_type, info.serial) == ("HWE-P1", SERIAL)
    request = meter.received.get(timeout=IO_TIMEOUT_S)
    assert f"Authorization: Bearer {TOKEN}".encode() in request


@pytest.mark.parametrize("shape", SHAPES)
def test_ca_mode_accepts_the_serial_in_capitals(pki, serve, shape):
    # HW_P1_SERIAL may be copied from getpeercert()'s serialNumber, "5C2FAFAABBCC".
    meter = serve(pki.devices[shape])
    config = _ca_config(meter, pki.devices[shape].ca_file, serial=SERIAL.upper())
    with HomeWizardClient(config) as client:
        assert client.device_info().serial == SERIAL


@pytest.mark.parametrize("shape", SHAPES)
def test_pinned_mode_accepts_the_certificate_pinned_at_pairing(pki, serve, shape):
    meter = serve(pki.devices[shape])
    pin = fetch_certificate(meter.address)  # pairing's trust on first use
    assert meter.received.get(timeout=IO_TIMEOUT_S) == b""  # a bare handshake
    assert pin.name == device_name(SERIAL)
    assert pin.sha256 == fingerprint(
        ssl.PEM_cert_to_DER_cert(pki.devices[shape].cert_file.read_text())
    )
    with HomeWizardClient(_pinned_config(meter, pin, pin.sha256)) as client:
        assert client.device_info().serial == SERIAL
    assert f"Authorization: Bearer {TOKEN}".encode() in meter.received.get(timeout=IO_TIMEOUT_S)


@pytest.mark.parametrize("shape", SHAPES)
def test_ca_mode_refuses_another_serial_before_the_token_is_sent(pki, serve, shape):
    meter = serve(pki.devices[shape])
    config = _ca_config(meter, pki.devices[shape].ca_file, serial=OTHER_SERIAL)
    with HomeWizardClient(config) as client:
        with pytest.raises(MeterTLSError, match=f"identity mismatch.*{OTHER_SERIAL}"):
            client.device_info()
    assert meter.received.get(timeout=IO_TIMEOUT_S) == b""


def test_auto_mode_does_not_fall_back_to_plain_http_when_the_identity_is_wrong(pki, serve):
    # Only "nothing listens for https" may move an auto client to v1; a wrong device must not.
    meter = serve(pki.devices["dns-san"])
    config = _ca_config(meter, pki.devices["dns-san"].ca_file, serial=OTHER_SERIAL)
    with HomeWizardClient(MeterConfig(**{**config.__dict__, "api": "auto"})) as client:
        with pytest.raises(MeterTLSError, match="identity mismatch"):
            client.api  # noqa: B018
    assert meter.received.get(timeout=IO_TIMEOUT_S) == b""
    assert meter.received.empty()  # and no second, plain-HTTP connection


@pytest.mark.parametrize("shape", SHAPES)
def test_ca_mode_refuses_a_certificate_from_another_ca(pki, serve, shape):
    meter = serve(pki.stranger)
    with HomeWizardClient(_ca_config(meter, pki.devices[shape].ca_file)) as client:
        with pytest.raises(MeterTLSError, match="not trusted"):
            client.device_info()
    assert meter.received.get(timeout=IO_TIMEOUT_S) == b""


def test_the_real_homewizard_ca_does_not_trust_the_simulator(pki, serve):
    meter = serve(pki.devices["cn-only"])
    with HomeWizardClient(_ca_config(meter, REAL_CA)) as client:
        with pytest.raises(MeterTLSError, match="not trusted"):
            client.device_info()
    assert meter.received.get(timeout=IO_TIMEOUT_S) == b""


@pytest.mark.parametrize("shape", SHAPES)
def test_pinned_mode_refuses_a_changed_certificate(pki, serve, shape):
    # Same CA, same device name, new key: what a replaced or impersonated meter shows.
    pin = PinnedCertificate.load(pki.devices[shape].cert_file)
    meter = serve(pki.rekeyed[shape])
    with HomeWizardClient(_pinned_config(meter, pin)) as client:
        with pytest.raises(MeterTLSError, match="not trusted"):
            client.device_info()
    assert meter.received.get(timeout=IO_TIMEOUT_S) == b""


@pytest.mark.parametrize("shape", SHAPES)
def test_pinned_mode_refuses_a_fingerprint_other_than_the_pinned_one(pki, serve, shape):
    pin = PinnedCertificate.load(pki.devices[shape].cert_file)
    other = PinnedCertificate.load(pki.rekeyed[shape].cert_file)
    meter = serve(pki.devices[shape])
    with HomeWizardClient(_pinned_config(meter, pin, other.sha256)) as client:
        with pytest.raises(MeterTLSError, match="fingerprint differs"):
            client.device_info()
    assert meter.received.get(timeout=IO_TIMEOUT_S) == b""


# -- why: what Python's defaults do with these certificates -----------------------------


def test_strict_verification_refuses_the_v1_ca_and_is_the_default_from_python_3_13(pki, serve):
    strict_by_default = bool(ssl.create_default_context().verify_flags & ssl.VERIFY_X509_STRICT)
    assert strict_by_default == (sys.version_info >= (3, 13))
    meter = serve(pki.devices["cn-only"])
    context = ssl.create_default_context(cafile=str(pki.devices["cn-only"].ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # what 3.13 does by itself
    context.hostname_checks_common_name = True
    with pytest.raises(ssl.SSLCertVerificationError, match="invalid CA certificate"):
        _handshake(context, meter, device_name(SERIAL))
    _handshake(ca_context(pki.devices["cn-only"].ca_file, SERIAL), meter, device_name(SERIAL))


def test_the_host_name_check_ignores_the_common_name_once_a_dns_san_exists(pki, serve):
    meter = serve(pki.devices["dns-san"])
    context = ssl.create_default_context(cafile=str(pki.devices["dns-san"].ca_file))
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    context.hostname_checks_common_name = True  # what HomeWizard's docs suggest
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _handshake(context, meter, device_name(SERIAL))
    _handshake(ca_context(pki.devices["dns-san"].ca_file, SERIAL), meter, device_name(SERIAL))


def test_meter_contexts_require_a_verified_certificate_and_refuse_memory_bios(pki):
    pin = PinnedCertificate.load(pki.devices["cn-only"].cert_file)
    for context in (ca_context(pki.devices["cn-only"].ca_file, SERIAL), pinned_context(pin)):
        assert context.verify_mode == ssl.CERT_REQUIRED
        with pytest.raises(TypeError, match="blocking sockets"):
            context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())


# -- which names are this device -------------------------------------------------------


@pytest.mark.parametrize(
    ("common_names", "dns_names", "is_device"),
    [
        ((f"appliance/p1dongle/{SERIAL}",), (), True),  # cn-only devices
        ((f"appliance/p1dongle/{SERIAL}",), (SERIAL,), True),  # issue #241's shape
        ((f"appliance/p1dongle/{SERIAL.upper()}",), (), True),
        ((), (SERIAL,), True),
        ((), (f"{SERIAL}.local",), True),
        ((), (f"appliance/p1dongle/{SERIAL}",), True),
        ((f"appliance/p1dongle/{OTHER_SERIAL}",), (), False),
        ((f"appliance/p1dongle/{OTHER_SERIAL}",), (SERIAL,), False),  # two devices
        ((f"appliance/energysocket/{SERIAL}",), (), False),  # not a P1 meter
        ((SERIAL,), (), False),  # a bare serial counts only as a DNS name
        ((), (f"x{SERIAL}",), False),
        ((), (f"{SERIAL}x.local",), False),
        ((), (), False),
    ],
)
def test_device_names(common_names, dns_names, is_device):
    assert CertificateNames(common_names, dns_names).name_device(SERIAL) is is_device


# -- the simulated certificates have the real shapes -----------------------------------


def _text(path: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(path)],
        check=True, capture_output=True, text=True, timeout=IO_TIMEOUT_S,
    ).stdout  # fmt: skip


def _shape(path: Path) -> dict[str, object]:
    text = _text(path)

    def field(pattern: str) -> str:
        return re.search(pattern, text, re.MULTILINE).group(1).strip()  # type: ignore[union-attr]

    return {
        "version": field(r"Version: (\d+)"),
        "key": field(r"Public Key Algorithm: (\S+)") + " " + field(r"Public-Key: \((\d+) bit\)"),
        "signature": field(r"Signature Algorithm: (\S+)"),
        "self_signed": field(r"Issuer: (.*)$") == field(r"Subject: (.*)$"),
        # Each extension's heading, under the "X509v3 extensions:" block heading.
        "extensions": re.findall(r"^\s+(X509v3 (?!extensions:)[^:]+):", text, re.MULTILINE),
    }


def test_the_real_ca_is_the_published_one_and_version_1_without_extensions(pki):
    assert fingerprint(ssl.PEM_cert_to_DER_cert(REAL_CA.read_text())) == REAL_CA_SHA256
    assert _shape(REAL_CA) == {
        "version": "1",
        "key": "rsaEncryption 2048",
        "signature": "sha256WithRSAEncryption",
        "self_signed": True,
        "extensions": [],
    }
    for shape in SHAPES:
        assert _shape(pki.devices[shape].ca_file) == _shape(REAL_CA)


@pytest.mark.parametrize("shape", SHAPES)
def test_device_certificates_have_the_shape_issue_241_shows(pki, shape):
    path = pki.devices[shape].cert_file
    text = _text(path)
    assert f"Subject: CN = appliance/p1dongle/{SERIAL}\n" in text
    assert f"Serial Number: {int(SERIAL, 16)} (0x{SERIAL})" in text
    assert "Not Before: Jan  1 00:00:00 2025 GMT" in text
    assert "Not After : Dec 31 23:59:59 2049 GMT" in text
    if shape == "cn-only":
        assert _shape(path)["version"] == "1" and _shape(path)["extensions"] == []
    else:
        assert _shape(path)["version"] == "3"
        assert _shape(path)["extensions"] == ["X509v3 Subject Alternative Name"]
        assert f"DNS:{SERIAL}\n" in text
