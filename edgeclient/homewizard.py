"""HomeWizard P1 meter client (local API v1 over http, v2 over verified https).

httpx and ssl errors are translated once, here, into the Meter* vocabulary below, so
the poll loop deals with a handful of meter conditions instead of transport details.
The client is synchronous: the edge polls one meter every few seconds from one thread.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from edgeclient.meter_tls import (
    DEVICE_NAME_PREFIX,
    CertificateError,
    DeviceIdentityError,
    PinnedCertificate,
    ca_context,
    device_name,
    parse_fingerprint,
    pinned_context,
)
from edgeclient.normalise import ApiVersion

# A LAN device answers in milliseconds; these bound a meter that fell off Wi-Fi so a
# poll never blocks the loop for long.
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 5.0
POOL_TIMEOUT_S = 1.0
TIMEOUT = httpx.Timeout(
    connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S, write=WRITE_TIMEOUT_S, pool=POOL_TIMEOUT_S
)
V1_PORT = 80
V2_PORT = 443

ApiChoice = Literal["v1", "v2", "auto"]


class MeterError(Exception):
    """Any failure to get an answer from the meter."""


class MeterConfigError(MeterError, ValueError):
    """The configuration is unusable; the message starts with the variable's name."""


class MeterUnreachable(MeterError):
    """No connection (refused, no route, dropped mid-answer)."""


class MeterTimeout(MeterError):
    """The meter did not answer in time."""


class MeterTLSError(MeterError):
    """The meter's certificate is not the one we trust: never retried without a fix."""


class MeterAuthError(MeterError):
    """Token refused (v2) or local API disabled in the HomeWizard app (v1)."""


class MeterProtocolError(MeterError):
    """The answer is not what the HomeWizard API documents (not JSON, not an object)."""


class MeterDeviceError(MeterError):
    """The meter answered with an HTTP error; ``code`` is its error id, when it sent one."""

    def __init__(self, message: str, status: int, code: str | None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ButtonNotPressed(MeterDeviceError):
    """``user:creation-not-enabled``: pairing waits for the button on the meter."""


@dataclass(frozen=True)
class DeviceInfo:
    product_type: str | None
    product_name: str | None
    serial: str | None
    firmware_version: str | None
    api_version: str | None


@dataclass(frozen=True)
class Reading:
    """One measurement answer, still in the device's own field names."""

    api: ApiVersion
    payload: dict[str, Any]


@dataclass(frozen=True)
class MeterConfig:
    host: str  # host, host:port or [v6]:port
    api: ApiChoice = "auto"
    token: str | None = None
    ca_file: Path | None = None
    serial: str | None = None  # with ca_file: the device to expect (12 hex digits)
    pinned: PinnedCertificate | None = None
    pinned_sha256: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> MeterConfig:
        """HW_P1_HOST, HW_P1_API, HW_P1_TOKEN, HW_P1_CA_FILE, HW_P1_SERIAL,
        HW_P1_CERT_FILE, HW_P1_CERT_SHA256; raises MeterConfigError naming the variable."""

        def get(name: str) -> str | None:
            return (environ.get(name) or "").strip() or None

        host = get("HW_P1_HOST")
        if host is None:
            raise MeterConfigError("HW_P1_HOST: required (the meter's address, host or host:port)")
        try:
            split_host(host)
        except ValueError as exc:
            raise MeterConfigError(f"HW_P1_HOST: {exc}") from None
        api = (get("HW_P1_API") or "auto").lower()
        if api not in ("v1", "v2", "auto"):
            raise MeterConfigError(f"HW_P1_API: expected v1, v2 or auto, got {api!r}")
        pinned = None
        if cert_file := get("HW_P1_CERT_FILE"):
            try:
                pinned = PinnedCertificate.load(Path(cert_file))
            except CertificateError as exc:
                raise MeterConfigError(f"HW_P1_CERT_FILE: {exc}") from None
        sha = get("HW_P1_CERT_SHA256")
        if sha is not None:
            try:
                sha = parse_fingerprint(sha)
            except CertificateError as exc:
                raise MeterConfigError(f"HW_P1_CERT_SHA256: {exc}") from None
        ca_file = Path(raw_ca) if (raw_ca := get("HW_P1_CA_FILE")) else None
        if ca_file is not None and not ca_file.is_file():
            raise MeterConfigError(f"HW_P1_CA_FILE: no such file {str(ca_file)!r}")
        serial = get("HW_P1_SERIAL")
        if serial is not None:
            # The serial is the device's MAC, "12 hexadecimal values" (HomeWizard API
            # docs, v2/device_information); the certificate names
            # appliance/p1dongle/<serial> in lowercase, as GET /api reports it.
            if len(serial) != 12 or any(ch not in "0123456789abcdef" for ch in serial.lower()):
                raise MeterConfigError(
                    f"HW_P1_SERIAL: expected the meter's serial, 12 hex digits "
                    f"(as in {DEVICE_NAME_PREFIX}5c2fafaabbcc), got {serial!r}"
                )
            serial = serial.lower()
        config = cls(
            host=host,
            api=api,  # type: ignore[arg-type]
            token=get("HW_P1_TOKEN"),
            ca_file=ca_file,
            serial=serial,
            pinned=pinned,
            pinned_sha256=sha,
        )
        if api == "v2":
            if config.token is None:
                raise MeterConfigError("HW_P1_TOKEN: required for API v2 (run manage.py hw_pair)")
            if not config.v2_trust_configured:
                raise MeterConfigError(
                    "HW_P1_CERT_FILE: required for API v2 (or HW_P1_CA_FILE with HW_P1_SERIAL)"
                )
        if ca_file is not None and pinned is None and config.serial is None:
            raise MeterConfigError("HW_P1_SERIAL: required with HW_P1_CA_FILE (the device name)")
        return config

    @property
    def v2_trust_configured(self) -> bool:
        return self.pinned is not None or (self.ca_file is not None and self.serial is not None)


def split_host(host: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address -> (hostname, port)."""
    if "/" in host or "@" in host or not host:
        raise ValueError(f"expected host or host:port, got {host!r}")
    if host.count(":") > 1 and not host.startswith("["):
        return host, None
    try:
        parts = urlsplit("//" + host)
        port = parts.port
    except ValueError:
        raise ValueError(f"expected host or host:port, got {host!r}") from None
    if not parts.hostname:
        raise ValueError(f"expected host or host:port, got {host!r}")
    return parts.hostname, port


class HomeWizardClient:
    """One meter. ``api`` is resolved on first use when the config says ``auto``."""

    def __init__(self, config: MeterConfig, *, timeout: httpx.Timeout = TIMEOUT) -> None:
        self.config = config
        self._hostname, self._port = split_host(config.host)
        self._api: ApiVersion | None = None if config.api == "auto" else config.api
        self._timeout = timeout
        self._plain: httpx.Client | None = None
        self._tls: httpx.Client | None = None
        # Sent as the TLS server name, as the official client does (server_hostname =
        # the device identity); the device check itself is the context's (meter_tls).
        self._server_name: str | None
        if config.pinned is not None:
            self._server_name = config.pinned.name
        elif config.serial is not None:
            self._server_name = device_name(config.serial)
        else:
            self._server_name = None

    def __enter__(self) -> HomeWizardClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for client in (self._plain, self._tls):
            if client is not None:
                client.close()
        self._plain = self._tls = None

    @property
    def api(self) -> ApiVersion:
        """The API in use; probes the meter (v2, then v1) when configured ``auto``."""
        if self._api is None:
            self._api = self._probe()
        return self._api

    def device_info(self) -> DeviceInfo:
        data = self._get_json(self.api, "/api")
        return DeviceInfo(
            product_type=_str(data.get("product_type")),
            product_name=_str(data.get("product_name")),
            serial=_str(data.get("serial")),
            firmware_version=_str(data.get("firmware_version")),
            api_version=_str(data.get("api_version")),
        )

    def measurement(self) -> Reading:
        api = self.api
        path = "/api/measurement" if api == "v2" else "/api/v1/data"
        return Reading(api=api, payload=self._get_json(api, path))

    def telegram(self) -> str:
        """The latest raw DSMR telegram (text/plain): ``/api/telegram`` on v2,
        ``/api/v1/telegram`` on v1 (api-documentation.homewizard.com, docs/v2/telegram
        and docs/v1/telegram). A dongle that has received none answers 503."""
        api = self.api
        path = "/api/telegram" if api == "v2" else "/api/v1/telegram"
        response = self._send("GET", api, path)
        try:
            return response.content.decode("ascii")
        except UnicodeDecodeError as exc:
            raise MeterProtocolError(f"{self.config.host}: telegram is not ASCII") from exc

    def create_user(self, name: str) -> str:
        """POST /api/user (v2): the new token, or ButtonNotPressed until the button is."""
        response = self._send("POST", "v2", "/api/user", json={"name": name}, auth=False)
        data = self._json(response)
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise MeterProtocolError(f"{self.config.host}: pairing answer carries no token")
        return token

    def _probe(self) -> ApiVersion:
        if self.config.token is not None and self.config.v2_trust_configured:
            try:
                self._get_json("v2", "/api")
                return "v2"
            except MeterUnreachable:
                pass  # nothing listens for https: an older firmware, try v1
            except MeterDeviceError as exc:
                if exc.status not in (400, 404):
                    raise
        self._get_json("v1", "/api")
        return "v1"

    def _get_json(self, api: ApiVersion, path: str) -> dict[str, Any]:
        return self._json(self._send("GET", api, path))

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            raise MeterProtocolError(f"{self.config.host}: answer is not JSON") from exc
        if not isinstance(data, dict):
            raise MeterProtocolError(f"{self.config.host}: answer is not a JSON object")
        return data

    def _send(
        self, method: str, api: ApiVersion, path: str, *, json: Any = None, auth: bool = True
    ) -> httpx.Response:
        host = self.config.host
        try:
            if api == "v2":
                response = self._v2_client().request(
                    method,
                    self._url("https", V2_PORT, path),
                    json=json,
                    headers=self._v2_headers(auth),
                    extensions={"sni_hostname": self._server_name},
                )
            else:
                response = self._v1_client().request(
                    method, self._url("http", V1_PORT, path), json=json
                )
        except httpx.TimeoutException as exc:
            raise MeterTimeout(f"{host}: no answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            tls = _ssl_cause(exc)
            if isinstance(tls, DeviceIdentityError):  # verified, but not our device
                raise MeterTLSError(f"{host}: {tls}") from exc
            if isinstance(tls, ssl.SSLCertVerificationError):
                raise MeterTLSError(f"{host}: certificate not trusted: {tls}") from exc
            if tls is not None:
                raise MeterTLSError(f"{host}: TLS handshake failed: {tls}") from exc
            raise MeterUnreachable(f"{host}: {exc or type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise _status_error(host, api, response)
        return response

    def _url(self, scheme: str, default_port: int, path: str) -> str:
        name = f"[{self._hostname}]" if ":" in self._hostname else self._hostname
        return f"{scheme}://{name}:{self._port or default_port}{path}"

    def _v2_headers(self, auth: bool) -> dict[str, str]:
        headers = {"X-Api-Version": "2"}
        if auth:
            if self.config.token is None:
                raise MeterConfigError("HW_P1_TOKEN: required for API v2 (run manage.py hw_pair)")
            headers["Authorization"] = f"Bearer {self.config.token}"
        return headers

    def _v1_client(self) -> httpx.Client:
        if self._plain is None:
            self._plain = httpx.Client(timeout=self._timeout, trust_env=False)
        return self._plain

    def _v2_client(self) -> httpx.Client:
        if self._tls is None:
            config = self.config
            if config.pinned is not None:
                context = pinned_context(config.pinned, config.pinned_sha256)
            elif config.ca_file is not None and config.serial is not None:
                context = ca_context(config.ca_file, config.serial)
            else:
                raise MeterConfigError(
                    "HW_P1_CERT_FILE: required for API v2 (or HW_P1_CA_FILE with HW_P1_SERIAL)"
                )
            self._tls = httpx.Client(verify=context, timeout=self._timeout, trust_env=False)
        return self._tls


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    # httpx keeps only the message of some wrapped errors: recognise OpenSSL's wording.
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return ssl.SSLCertVerificationError(text)
    if "[SSL" in text:
        return ssl.SSLError(text)
    return None


def _status_error(host: str, api: ApiVersion, response: httpx.Response) -> MeterError:
    code = _error_code(response)
    status = response.status_code
    detail = f"{host}: HTTP {status}" + (f" {code}" if code else "")
    if status == 401:
        return MeterAuthError(f"{detail} (token refused: pair again with manage.py hw_pair)")
    if code == "user:creation-not-enabled":
        return ButtonNotPressed(detail, status, code)
    if status == 403 and api == "v1":
        return MeterAuthError(f"{detail} (enable the local API in the HomeWizard app)")
    return MeterDeviceError(detail, status, code)


def _error_code(response: httpx.Response) -> str | None:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return None
    if isinstance(error, str):
        return error
    if isinstance(error, dict):  # v1: {"id": 202, "description": "API not enabled"}
        return _str(error.get("description")) or _str(error.get("id"))
    return None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


# -- what the device is ---------------------------------------------------------------

P1_PRODUCT_TYPE = "HWE-P1"
# The product_type values the HomeWizard API documents ("Devices and API Versions",
# docs/introduction.mdx in github:homewizard/api-documentation), by the names it uses.
PRODUCT_NAMES = {
    "HWE-P1": "P1 Meter",
    "HWE-SKT": "Energy Socket",
    "HWE-WTR": "Watermeter",
    "HWE-KWH1": "kWh Meter (1-phase)",
    "HWE-KWH3": "kWh Meter (3-phase)",
    "SDM230-wifi": "kWh Meter (1-phase)",
    "SDM630-wifi": "kWh Meter (3-phase)",
    "HWE-DSP": "Energy Display",
    "HWE-BAT": "Plug-In Battery",
}


class MeterWrongProduct(MeterError):
    """GET /api says the device is not a P1 meter: a configuration error, never retried.

    A kWh meter or an Energy Socket also answers with import registers and a power, so
    its readings would otherwise pass for the household's grid connection.
    """

    def __init__(self, message: str, product_type: str | None) -> None:
        super().__init__(message)
        self.product_type = product_type


def require_p1_meter(client: HomeWizardClient, setting: str = "HW_P1_HOST") -> DeviceInfo:
    """GET /api (``device_info``); MeterWrongProduct unless ``product_type`` is HWE-P1.

    ``setting`` names where the address came from, for the message. Other MeterErrors
    (unreachable, timeout, TLS, token) propagate unchanged.
    """
    info = client.device_info()
    if info.product_type == P1_PRODUCT_TYPE:
        return info
    where = f"{setting}={client.config.host}"
    if info.product_type is None:
        message = f"{where} answers GET /api without a product_type: not a HomeWizard P1 meter"
    else:
        name = PRODUCT_NAMES.get(info.product_type, "device")
        message = (
            f"{where} is a HomeWizard {name} ({info.product_type}), not a P1 meter "
            f"({P1_PRODUCT_TYPE}): point {setting} at the P1 meter"
        )
    raise MeterWrongProduct(message, info.product_type)
