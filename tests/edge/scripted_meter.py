"""A stand-in HomeWizard device for answers the simulator does not give: other products
(an Energy Socket, a kWh meter, a water meter at HW_P1_HOST) and every documented
pairing error.

Every answer comes from a source, cited beside it:
- DOCS: the HomeWizard local API documentation, github:homewizard/api-documentation
  (docs/v1/api.mdx, docs/v2/authorization.mdx, docs/v2/error-handling.mdx,
  docs/v2/device_information.mdx), as served at api-documentation.homewizard.com;
- HWE: the official client's recorded device answers, github:homewizard/python-homewizard-energy
  at 60be21a42da6700f3939bdbf3ed4e3d87a0bc2d8 (tests/v1/fixtures/<product>/, tests/v2/fixtures/).

v1 is plain HTTP, v2 TLS with a certificate made by edgeclient.simcerts (pinned by the
client at pairing, as with a real meter). Standard library only, one thread per request.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edgeclient.simcerts import SimulatorCertificates, ensure_certificates
from tests.edge.stand_in import JSONHandler, serve

SERIAL = "5c2fafaabbcc"  # the serial of the DOCS examples

# GET /api of each product, v1 (HWE: tests/v1/fixtures/<product>/device.json).
V1_DEVICES: dict[str, dict[str, Any]] = {
    "HWE-P1": {"product_type": "HWE-P1", "product_name": "P1 Meter", "serial": "3c39e7aabbcc",
               "firmware_version": "2.11", "api_version": "v1"},
    "HWE-SKT": {"product_type": "HWE-SKT", "product_name": "Energy Socket",
                "serial": "3c39e7aabbcc", "firmware_version": "2.11", "api_version": "v1"},
    "HWE-KWH1": {"product_type": "HWE-KWH1", "product_name": "kWh Meter",
                 "serial": "3c39e7aabbcc", "firmware_version": "2.11", "api_version": "v1"},
    "HWE-WTR": {"product_type": "HWE-WTR", "product_name": "Water Meter",
                "serial": "3c39e7aabbcc", "firmware_version": "2.11", "api_version": "v1"},
}  # fmt: skip
# GET /api/v1/data of the kWh meter (HWE: tests/v1/fixtures/HWE-KWH1/data.json): an import
# register and a power, so without an identity check it would pass for a P1 reading.
V1_KWH1_DATA: dict[str, Any] = {
    "wifi_ssid": "My Wi-Fi", "wifi_strength": 74,
    "total_power_import_kwh": 122.376, "total_power_import_t1_kwh": 122.376,
    "total_power_export_kwh": 579.813, "total_power_export_t1_kwh": 579.813,
    "active_power_w": -45.252, "active_power_l1_w": -45.252, "active_voltage_v": 228.472,
    "active_current_a": 0.273, "active_frequency_hz": 50,
}  # fmt: skip
# GET /api of each product, v2 (HWE: tests/v2/fixtures/<product>/device.json; DOCS).
V2_DEVICES: dict[str, dict[str, Any]] = {
    "HWE-P1": {"product_name": "P1 Meter", "product_type": "HWE-P1", "serial": SERIAL,
               "firmware_version": "6.00", "api_version": "2.0.0"},
    "HWE-KWH1": {"product_name": "kWh Meter 1-Phase", "product_type": "HWE-KWH1",
                 "serial": SERIAL, "firmware_version": "6.00", "api_version": "2.1.0"},
}  # fmt: skip

# Every error id DOCS (docs/v2/error-handling.mdx) lists that POST /api/user can answer,
# with a status: 403 for the button (docs/v2/authorization.mdx), 400 for a bad request
# (the error-handling example answers json:parameter-invalid-type with 400), 500 for the
# internal error. user:no-storage: 403, as the simulator answers it.
PAIRING_ERRORS: dict[str, int] = {
    "user:creation-not-enabled": 403,
    "user:no-storage": 403,
    "user:invalid-prefix": 400,
    "user:name-empty": 400,
    "user:name-invalid": 400,
    "user:name-too-long": 400,
    "request:invalid-json": 400,
    "request:too-large": 400,
    "request:api-version-not-supported": 400,
    "json:no-parameters-recognized": 400,
    "json:parameter-missing:name": 400,
    "json:parameter-invalid-type:name": 400,
    "json:parameter-not-exclusive": 400,
    "request:internal-server-error": 500,
}

PairAnswer = Callable[[Any], tuple[int, dict[str, Any]]]


@dataclass
class ScriptedMeter:
    """``pair_answer(body)`` decides POST /api/user; without one the device behaves as
    DOCS says once the button is pressed: one token per user name, and a name that pairs
    again gets a new token while "the previous one will be invalidated"."""

    api: str = "v2"
    product: str = "HWE-P1"
    port: int = 0
    cert_dir: Path | None = None
    pair_answer: PairAnswer | None = None
    data: dict[str, Any] = field(default_factory=lambda: dict(V1_KWH1_DATA))
    names: list[Any] = field(default_factory=list)  # the name of every pairing request
    tokens: dict[str, str] = field(default_factory=dict)  # user name -> its valid token
    certificates: SimulatorCertificates | None = None
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _connections: set[socket.socket] = field(default_factory=set)

    def start(self) -> ScriptedMeter:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        server.meter = self  # type: ignore[attr-defined]
        if self.api == "v2":
            assert self.cert_dir is not None, "v2 needs a cert_dir"
            self.certificates = ensure_certificates(self.cert_dir, SERIAL)
        self._server = server
        serve(server, self.certificates)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        # A client's keep-alive connection would otherwise go on being answered by its
        # handler thread: a device that left the network answers nothing.
        with self._lock:
            connections, self._connections = set(self._connections), set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(conn)

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    def accepts(self, authorization: str | None) -> bool:
        with self._lock:
            return authorization in {f"Bearer {t}" for t in self.tokens.values()}

    def pair(self, body: Any) -> tuple[int, dict[str, Any]]:
        name = body.get("name") if isinstance(body, dict) else None
        with self._lock:
            self.names.append(name)
        if self.pair_answer is not None:
            return self.pair_answer(body)
        if not isinstance(name, str) or not name.startswith("local/"):
            return 400, {"error": "user:invalid-prefix"}
        token = secrets.token_hex(16).upper()  # DOCS: ^[A-F0-9]{32}$
        with self._lock:
            self.tokens[name] = token  # a reused name: the earlier token is gone
        return 200, {"token": token, "name": name}


def answering(code: str) -> PairAnswer:
    """POST /api/user answered with one documented error, whatever was asked."""
    status = PAIRING_ERRORS[code]
    return lambda _body: (status, {"error": code})


class _Handler(JSONHandler):
    @property
    def meter(self) -> ScriptedMeter:
        return self.server.meter  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        self.meter.track(self.connection, True)

    def finish(self) -> None:
        self.meter.track(self.connection, False)
        super().finish()

    def do_GET(self) -> None:
        meter = self.meter
        if meter.api == "v2":
            if not meter.accepts(self.headers.get("Authorization")):
                return self._send(401, {"error": "user:unauthorized"})  # DOCS
            if self.path == "/api":
                return self._send(200, V2_DEVICES[meter.product])
        else:
            if self.path == "/api":
                return self._send(200, V1_DEVICES[meter.product])
            if self.path == "/api/v1/data":
                return self._send(200, meter.data)
        return self._send(404, {"error": "request:not-found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return self._send(400, {"error": "request:invalid-json"})  # DOCS
        if self.path == "/api/user" and self.meter.api == "v2":
            return self._send(*self.meter.pair(body))
        return self._send(404, {"error": "request:not-found"})
