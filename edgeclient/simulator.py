"""A fake HomeWizard P1 meter for demos and tests (standard library only, no Django).

One port speaks both APIs, told apart by the first byte a client sends: a TLS handshake
gets API v2 (certificate from a CA this simulator makes), anything else API v1 over
plain HTTP. The meter makes one telegram per second; polls within the same second get
the same telegram, as from a real dongle.

Where a client can tell, it answers as the HomeWizard API documentation says the device
does: the ``X-Api-Version`` header on every v2 answer, ``400
request:api-version-not-supported`` for a version other than 2 (no header: the latest),
``request:invalid-json`` and the ``user:*`` errors when pairing, a reused user name
revoking that name's previous token, ``/api/system`` and ``/api/v1/system``. A
``Profile`` (edgeclient.simprofiles) picks the meter variant; ``fixture_dir`` replays a
recorded answer from edgeclient/fixtures/ instead of the simulated household.

Control (no authentication, so bind to loopback): POST /_sim/button,
POST /_sim/faults {"slow_s", "error_rate", "garbage_rate"}, POST /_sim/offline
{"seconds"}, GET /_sim/state.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from edgeclient import simpayloads
from edgeclient.household import BRUSSELS, MeterModel, Telegram
from edgeclient.simcerts import SimulatorCertificates, ensure_certificates
from edgeclient.simprofiles import DEFAULT, PROFILES, Profile

ServedApi = Literal["v1", "v2", "both"]
_SNIFF_TIMEOUT_S = 10.0
# How long stopping waits for answers in flight to be sent and logged.
_DRAIN_TIMEOUT_S = 2.0
_TLS_RECORD_HANDSHAKE = b"\x16"
API_VERSION_HEADER = "X-Api-Version"
SUPPORTED_MAJOR = "2"
# POST /api/user: "local/" and 1..40 of these characters (authorization docs).
_USER_PREFIX = "local/"
_USER_NAME = re.compile(r"[a-zA-Z0-9\-_/\\# ]+")
_USER_NAME_MAX = 40
# The preset token belongs to a user of its own, so pairing under any name an edge
# picks never revokes it.
PRESET_USER = "local/simulator-preset"


class _InvalidJson:
    """The body of a request that was not JSON (an empty body included)."""


_INVALID_JSON = _InvalidJson()


@dataclass
class Faults:
    slow_s: float = 0.0  # delay before each measurement answer
    error_rate: float = 0.0  # share of measurement answers that are HTTP 500
    garbage_rate: float = 0.0  # share with a broken value (see simpayloads.garble)


@dataclass
class SimulatorConfig:
    port: int = 0  # 0: an ephemeral port, see P1Simulator.port
    host: str = "127.0.0.1"
    api: ServedApi = "both"
    seed: int = 1
    cert_dir: Path | None = None  # required when serving v2
    log_path: Path | None = None
    token: str | None = None  # default: derived from the seed
    button_after: int | None = 3  # pairing attempts until the "button" is pressed
    no_storage: bool = False  # answer pairing with user:no-storage
    clock: Callable[[], float] = time.time
    faults: Faults = field(default_factory=Faults)
    profile: Profile = PROFILES[DEFAULT]
    swap_after: int | None = None  # meter-swap profile: telegrams until the swap
    # One JSON line per measurement answer served: what the meter said, for tests that
    # match stored rows to served readings by value (v1 answers carry no time).
    readings_log_path: Path | None = None
    fixture_dir: Path | None = None  # replay a recorded device answer (see Recording)


@dataclass(frozen=True)
class Recording:
    """A recorded device: ``api.json``, and ``data.json`` (v1) or ``measurement.json``
    (v2), optionally ``system.json``, from one folder of edgeclient/fixtures/."""

    api: Literal["v1", "v2"]
    device: dict[str, Any]
    measurement: dict[str, Any]
    system: dict[str, Any] | None

    @classmethod
    def load(cls, folder: Path) -> Recording:
        def read(name: str) -> Any:
            path = folder / name
            return json.loads(path.read_text()) if path.exists() else None

        device, v1, v2 = read("api.json"), read("data.json"), read("measurement.json")
        if device is None or (v1 is None) == (v2 is None):
            raise ValueError(f"{folder}: needs api.json and one of data.json, measurement.json")
        return cls("v1" if v1 is not None else "v2", device, v1 or v2, read("system.json"))


# The first characters of the one line in which simulate_p1 states its settings as JSON,
# after the lines for people; programs that start it read that line alone
# (p1common.processes.parse_simulator_line).
SETTINGS_LINE_PREFIX = "p1-simulator-settings: "


def startup_lines(sim: P1Simulator) -> list[str]:
    """What simulate_p1 prints once it serves: a line for people, the HW_P1_* settings to
    copy into the edge's environment (when it serves v2), then the settings line."""
    variant = f"fixture {sim.config.fixture_dir}" if sim.recording else sim.profile.name
    lines = [
        f"simulated P1 meter {sim.serial} on {sim.address} "
        f"(api {sim.config.api}, profile {variant})"
    ]
    env: dict[str, str] = {}
    if sim.ca_file is not None:
        env = {
            "HW_P1_HOST": sim.address,
            "HW_P1_TOKEN": sim.token,
            "HW_P1_CA_FILE": str(sim.ca_file),
            "HW_P1_SERIAL": sim.serial,
        }
        lines += [f"  {name}={value}" for name, value in env.items()]
    settings = {
        "address": sim.address,
        "api": sim.config.api,
        "serial": sim.serial,
        "profile": variant,
        "token": sim.token if sim.ca_file is not None else None,
        "ca_file": str(sim.ca_file) if sim.ca_file is not None else None,
        "env": env,
    }
    lines.append(SETTINGS_LINE_PREFIX + json.dumps(settings, sort_keys=True))
    return lines


class P1Simulator:
    """Start with ``start()``; ``port``, ``ca_file``, ``device_name`` tell clients where."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.profile = config.profile
        self.recording = Recording.load(config.fixture_dir) if config.fixture_dir else None
        if self.recording is not None and isinstance(self.recording.device.get("serial"), str):
            self.serial = self.recording.device["serial"]
        else:
            digest = hashlib.sha256(f"serial:{config.seed}".encode()).hexdigest()
            self.serial = "5c2faf" + digest[:6]
        self.token = (
            config.token or hashlib.sha256(f"token:{config.seed}".encode()).hexdigest()[:32].upper()
        )
        self._swap_after = config.swap_after or self.profile.swap_after
        self._telegram_seconds = 0  # distinct telegrams made, for the meter swap
        self._last_second: int | None = None
        self._stuck_second: int | None = None
        self._started_at = time.monotonic()
        self.faults = config.faults
        self.certificates: SimulatorCertificates | None = None
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._served = threading.Condition(self._lock)
        self._served_count = 0
        self._in_flight = 0  # measurement answers being sent and logged
        self._users = {PRESET_USER: self.token}  # name -> its one valid token
        self._pair_attempts = 0
        self._button_pressed = False
        self._rng = random.Random(config.seed)  # noqa: S311 - reproducible faults
        self._model = MeterModel(config.seed, int(config.clock()))
        self._server: _MeterServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._port = config.port
        self._offline_timer: threading.Timer | None = None
        self._stopped = threading.Event()

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> P1Simulator:
        if self.config.api in ("v2", "both"):
            if self.config.cert_dir is None:
                raise ValueError("cert_dir is required to serve API v2")
            self.certificates = _device_certificates(
                self.config.cert_dir, self.serial, san=self.profile.san
            )
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(self.certificates.cert_file, self.certificates.key_file)
        self._listen()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._offline_timer is not None:
            self._offline_timer.cancel()
        self._close_listener()

    def __enter__(self) -> P1Simulator:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self._port}"

    @property
    def ca_file(self) -> Path | None:
        return self.certificates.ca_file if self.certificates else None

    @property
    def device_name(self) -> str:
        return "appliance/p1dongle/" + self.serial

    @property
    def unique_id(self) -> str:
        """The meter's unique_id now: a swapped meter has a new one."""
        return self.meter_unique_id(self._model.meter)

    def meter_unique_id(self, meter: int) -> str:
        label = f"meter:{self.config.seed}" + (f":{meter}" if meter else "")
        return hashlib.sha256(label.encode()).hexdigest()[:34].upper()

    # -- control ---------------------------------------------------------------------
    def press_button(self) -> None:
        with self._lock:
            self._button_pressed = True

    def go_offline(self, seconds: float | None = None) -> None:
        """Drop off the network: close the listener and every open connection.

        Back after ``seconds``, or when ``come_back()`` is called.
        """
        self._close_listener()
        if seconds is not None:
            timer = threading.Timer(seconds, self.come_back)
            timer.daemon = True
            self._offline_timer = timer
            timer.start()

    def come_back(self) -> None:
        """Listen again on the same port (no-op when stopped or already listening)."""
        with self._lock:
            if self._stopped.is_set() or self._server is not None:
                return
            self._listen()

    def wait_served(self, count: int, timeout_s: float) -> bool:
        """Block until ``count`` measurement answers were served in total."""
        with self._served:
            return self._served.wait_for(lambda: self._served_count >= count, timeout_s)

    @property
    def served_count(self) -> int:
        with self._lock:
            return self._served_count

    def telegram(self) -> Telegram:
        with self._lock:
            return self._telegram_locked()

    def _telegram_locked(self) -> Telegram:
        second = int(self.config.clock())
        telegram = self._model.telegram(second)
        if telegram.second != self._last_second:
            self._last_second = telegram.second
            self._telegram_seconds += 1
            if self._stuck_second is None:
                self._stuck_second = telegram.second
            swap = self._swap_after
            if swap is not None and telegram.meter == 0 and self._telegram_seconds > swap:
                self._model.swap_meter()
                telegram = self._model.telegram(second)
        return telegram

    def _stamp(self, telegram: Telegram) -> simpayloads.Stamp:
        clock = self.profile.clock
        if clock == "unset":
            return simpayloads.Stamp(None, trusted=False)
        second = telegram.second
        if clock == "stuck":
            second = self._stuck_second if self._stuck_second is not None else second
        return simpayloads.Stamp(simpayloads.local(second, BRUSSELS), trusted=clock == "meter")

    # -- internals used by the handler -----------------------------------------------
    def _listen(self) -> None:
        server = _MeterServer((self.config.host, self._port), _Handler, self)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            # A short poll interval keeps stop() and go_offline() quick.
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"p1sim:{self._port}",
            daemon=True,
        )
        self._thread.start()

    def _close_listener(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        # An answer already on its way must also reach the log before connections (or
        # the process) go: otherwise a reading the edge received would be missing from it.
        with self._served:
            self._served.wait_for(lambda: self._in_flight == 0, timeout=_DRAIN_TIMEOUT_S)
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _accepts_token(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        with self._lock:
            return header[7:].strip() in self._users.values()

    def _pair(self, body: Any) -> tuple[int, dict[str, Any]]:
        refused = _user_name_error(body)
        if refused is not None:
            return 400, {"error": refused}
        name = body["name"]
        if self.config.no_storage:
            return 403, {"error": "user:no-storage"}
        with self._lock:
            self._pair_attempts += 1
            after = self.config.button_after
            if after is not None and self._pair_attempts > after:
                self._button_pressed = True
            if not self._button_pressed:
                return 403, {"error": "user:creation-not-enabled"}
            token = secrets.token_hex(16).upper()
            # The documented rule: a reused name gets a new token, the old one is void.
            self._users[name] = token
        return 200, {"token": token, "name": name}

    def _measurement(self, api: str) -> tuple[int, Any, _Served | None]:
        faults = self.faults
        if faults.slow_s > 0:
            self._stopped.wait(faults.slow_s)
        with self._lock:
            telegram = self._telegram_locked()
            stamp = self._stamp(telegram)
            unique_id = self.meter_unique_id(telegram.meter)
            roll_error, roll_garbage = self._rng.random(), self._rng.random()
        if roll_error < faults.error_rate:
            return 500, {"error": "request:internal-server-error"}, None
        if self.recording is not None:
            if api != self.recording.api:
                return 404, {"error": "request:not-found"}, None
            payload = self.recording.measurement
        elif api == "v2":
            payload = simpayloads.v2_measurement(telegram, BRUSSELS, unique_id, self.profile, stamp)
        else:
            payload = simpayloads.v1_data(telegram, BRUSSELS, unique_id, self.profile)
        if roll_garbage < faults.garbage_rate:
            with self._lock:
                return 200, simpayloads.garble(payload, api, self._rng), None
        return 200, payload, _Served(api, telegram, stamp, unique_id, payload)

    def _served_measurement(self, served: _Served) -> None:
        with self._served:
            self._served_count += 1
            if self.config.log_path is not None:
                with self.config.log_path.open("a", encoding="utf-8") as log:
                    log.write(_utc_iso(served.telegram.second) + "\n")
                    log.flush()
            if self.config.readings_log_path is not None:
                line = json.dumps(served.reading(self.profile, self.recording is not None))
                with self.config.readings_log_path.open("a", encoding="utf-8") as log:
                    log.write(line + "\n")
                    log.flush()
            self._served.notify_all()

    def _system(self, api: str) -> dict[str, Any]:
        if self.recording is not None and self.recording.system is not None:
            return self.recording.system
        return simpayloads.system_info(api, int(time.monotonic() - self._started_at))

    def _telegram_text(self) -> tuple[int, str]:
        """GET /api/telegram, /api/v1/telegram: the raw DSMR telegram (text/plain)."""
        if self.recording is not None:
            # A recording holds parsed answers only: as a dongle that has none yet.
            return 503, "telegram:no-telegram-received"
        with self._lock:
            telegram = self._telegram_locked()
            stamp = self._stamp(telegram)
            unique_id = self.meter_unique_id(telegram.meter)
        return 200, simpayloads.dsmr_telegram(telegram, BRUSSELS, unique_id, self.profile, stamp)

    def _device_info(self, api: str) -> dict[str, Any]:
        if self.recording is not None:
            return self.recording.device
        return simpayloads.device_info(self.serial, api)

    def _state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "serial": self.serial,
                "profile": self.profile.name,
                "meter": self._model.meter,
                "unique_id": self.meter_unique_id(self._model.meter),
                "served": self._served_count,
                "pair_attempts": self._pair_attempts,
                "button_pressed": self._button_pressed,
                "faults": vars(self.faults),
            }


@dataclass(frozen=True)
class _Served:
    """One measurement answer on its way out, for the logs."""

    api: str
    telegram: Telegram
    stamp: simpayloads.Stamp
    unique_id: str
    payload: dict[str, Any]

    def reading(self, profile: Profile, recorded: bool) -> dict[str, Any]:
        """What the meter said, in wire names; None where it said nothing usable."""
        t = self.telegram
        line: dict[str, Any] = {
            "served_at": time.time(),
            "api": self.api,
            "profile": "fixture" if recorded else profile.name,
            "telegram_ts": _utc_iso(t.second),
        }
        if recorded:
            return line | {"payload": self.payload}
        stamp = self.stamp
        meter_ts = None
        if self.api == "v2" and stamp.trusted and stamp.local is not None:
            meter_ts = _utc_iso(t.second)
        imported = round(sum(t.import_kwh), 3)
        exported = round(sum(t.export_kwh), 3) if profile.export_registers else None
        gas = profile.gas == "meter"
        return line | {
            "meter_ts": meter_ts,
            "meter": t.meter,
            "unique_id": self.unique_id,
            "power_w": round(t.power_w),
            "energy_import_kwh": imported,
            "energy_export_kwh": exported,
            "gas_m3": t.gas_m3 if gas else None,
            "gas_ts": _utc_iso(t.gas_second) if gas else None,
        }


def _utc_iso(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat()


def _user_name_error(body: Any) -> str | None:
    """The documented error id for a POST /api/user body, or None when it is fine."""
    if body is _INVALID_JSON:
        return "request:invalid-json"
    if not isinstance(body, dict) or "name" not in body:
        return "json:parameter-missing:name"
    name = body["name"]
    if not isinstance(name, str):
        return "json:parameter-invalid-type:name"
    if not name.startswith(_USER_PREFIX):
        return "user:invalid-prefix"
    rest = name[len(_USER_PREFIX) :]
    if not rest:
        return "user:name-empty"
    if len(rest) > _USER_NAME_MAX:
        return "user:name-too-long"
    if not _USER_NAME.fullmatch(rest):
        return "user:name-invalid"
    return None


def _device_certificates(cert_dir: Path, serial: str, *, san: bool) -> SimulatorCertificates:
    if not san:
        return ensure_certificates(cert_dir, serial)
    # A folder of its own: the plain certificates are cached by serial in cert_dir.
    return ensure_certificates(cert_dir / "san", serial, san=True)


class _MeterServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, sim: P1Simulator) -> None:
        self.sim = sim
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # Runs in the connection's own thread, so sniffing never blocks accept().
        sim = self.sim
        conn = request
        sim._track(request, True)
        try:
            request.settimeout(_SNIFF_TIMEOUT_S)
            first = request.recv(1, socket.MSG_PEEK)
            is_tls = first == _TLS_RECORD_HANDSHAKE
            if not first or (is_tls and sim._tls is None):
                return
            if not is_tls and sim.config.api == "v2":
                return
            if is_tls:
                conn = sim._tls.wrap_socket(request, server_side=True)  # type: ignore[union-attr]
                sim._track(conn, True)
            conn.settimeout(None)
            # typeshed types the server argument as the base class's Self.
            self.RequestHandlerClass(conn, client_address, self)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError):
            return  # a client that hung up or refused our certificate
        finally:
            sim._track(request, False)
            if conn is not request:
                sim._track(conn, False)
                conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx pools connections
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _MeterServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per poll would drown the demo's own output

    @property
    def _tls(self) -> bool:
        return isinstance(self.connection, ssl.SSLSocket)

    def do_GET(self) -> None:
        sim = self.server.sim
        path = self.path.split("?", 1)[0]
        if path == "/_sim/state":
            return self._send(200, sim._state())
        if self._tls:
            if not self._version_supported():
                return self._send(400, {"error": "request:api-version-not-supported"})
            if not sim._accepts_token(self.headers.get("Authorization")):
                return self._send(401, {"error": "user:unauthorized"})
            if path == "/api":
                return self._send(200, sim._device_info("v2"))
            if path == "/api/measurement":
                return self._answer_measurement("v2")
            if path == "/api/system":
                return self._send(200, sim._system("v2"))
            if path == "/api/telegram":
                return self._send_text(*sim._telegram_text())
        else:
            if path == "/api":
                return self._send(200, sim._device_info("v1"))
            if path == "/api/v1/data":
                return self._answer_measurement("v1")
            if path == "/api/v1/system":
                return self._send(200, sim._system("v1"))
            if path == "/api/v1/telegram":
                return self._send_text(*sim._telegram_text())
        return self._send(404, {"error": "request:not-found"})

    def do_POST(self) -> None:
        sim = self.server.sim
        path = self.path.split("?", 1)[0]
        body = self._body()
        if path == "/api/user" and self._tls:
            if not self._version_supported():
                return self._send(400, {"error": "request:api-version-not-supported"})
            status, payload = sim._pair(body)
            return self._send(status, payload)
        if path == "/_sim/button":
            sim.press_button()
            return self._send(200, sim._state())
        if path == "/_sim/faults" and isinstance(body, dict):
            for name in ("slow_s", "error_rate", "garbage_rate"):
                if isinstance(body.get(name), int | float):
                    setattr(sim.faults, name, float(body[name]))
            return self._send(200, sim._state())
        if path == "/_sim/offline" and isinstance(body, dict):
            self._send(200, {"offline_s": body.get("seconds", 10)})
            threading.Thread(
                target=sim.go_offline, args=(float(body.get("seconds", 10)),), daemon=True
            ).start()
            return None
        return self._send(404, {"error": "request:not-found"})

    def _answer_measurement(self, api: str) -> None:
        sim = self.server.sim
        with sim._served:
            sim._in_flight += 1
        try:
            status, payload, served = sim._measurement(api)
            self._send(status, payload)
            if served is not None:
                # Logged only once the answer left, so the log never claims an unsent
                # reading; stop() waits for this line (see _close_listener).
                sim._served_measurement(served)
        finally:
            with sim._served:
                sim._in_flight -= 1
                sim._served.notify_all()

    def _version_supported(self) -> bool:
        # No header: the latest version answers (versioning docs, example 1).
        requested = self.headers.get(API_VERSION_HEADER)
        return requested is None or requested.strip() == SUPPORTED_MAJOR

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw)
        except ValueError:  # an empty body is not JSON either
            return _INVALID_JSON

    def _send_text(self, status: int, text: str) -> None:
        self._send_body(status, text.encode("ascii"), "text/plain")

    def _send(self, status: int, payload: Any) -> None:
        self._send_body(status, json.dumps(payload).encode(), "application/json")

    def _send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self._tls:
            self.send_header(API_VERSION_HEADER, simpayloads.V2_API_VERSION)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
