"""A fake HomeWizard P1 meter for demos and tests (standard library only, no Django).

One port speaks both APIs, told apart by the first byte a client sends: a TLS handshake
gets API v2 (certificate from a CA this simulator makes), anything else API v1 over
plain HTTP. The meter makes one telegram per second; polls within the same second get
the same telegram, as from a real dongle.

Control (no authentication, so bind to loopback): POST /_sim/button,
POST /_sim/faults {"slow_s", "error_rate", "garbage_rate"}, POST /_sim/offline
{"seconds"}, GET /_sim/state.
"""

from __future__ import annotations

import hashlib
import json
import random
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

ServedApi = Literal["v1", "v2", "both"]
_SNIFF_TIMEOUT_S = 10.0
# How long stopping waits for answers in flight to be sent and logged.
_DRAIN_TIMEOUT_S = 2.0
_TLS_RECORD_HANDSHAKE = b"\x16"


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


class P1Simulator:
    """Start with ``start()``; ``port``, ``ca_file``, ``device_name`` tell clients where."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.serial = "5c2faf" + hashlib.sha256(f"serial:{config.seed}".encode()).hexdigest()[:6]
        self.token = (
            config.token or hashlib.sha256(f"token:{config.seed}".encode()).hexdigest()[:32].upper()
        )
        self.unique_id = hashlib.sha256(f"meter:{config.seed}".encode()).hexdigest()[:34].upper()
        self.faults = config.faults
        self.certificates: SimulatorCertificates | None = None
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._served = threading.Condition(self._lock)
        self._served_count = 0
        self._in_flight = 0  # measurement answers being sent and logged
        self._tokens = {self.token}
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
            self.certificates = ensure_certificates(self.config.cert_dir, self.serial)
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
            return self._model.telegram(int(self.config.clock()))

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
            return header[7:].strip() in self._tokens

    def _pair(self, name: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(name, str) or not name.startswith("local/"):
            return 400, {"error": "user:invalid-prefix"}
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
            self._tokens.add(token)
        return 200, {"token": token, "name": name}

    def _measurement(self, api: str) -> tuple[int, Any, Telegram | None]:
        faults = self.faults
        if faults.slow_s > 0:
            self._stopped.wait(faults.slow_s)
        telegram = self.telegram()
        with self._lock:
            roll_error, roll_garbage = self._rng.random(), self._rng.random()
        if roll_error < faults.error_rate:
            return 500, {"error": "request:internal-server-error"}, None
        build = simpayloads.v2_measurement if api == "v2" else simpayloads.v1_data
        payload = build(telegram, BRUSSELS, self.unique_id)
        if roll_garbage < faults.garbage_rate:
            with self._lock:
                return 200, simpayloads.garble(payload, api, self._rng), None
        return 200, payload, telegram

    def _served_measurement(self, telegram: Telegram) -> None:
        with self._served:
            self._served_count += 1
            if self.config.log_path is not None:
                with self.config.log_path.open("a", encoding="utf-8") as log:
                    log.write(datetime.fromtimestamp(telegram.second, UTC).isoformat() + "\n")
                    log.flush()
            self._served.notify_all()

    def _state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "serial": self.serial,
                "served": self._served_count,
                "pair_attempts": self._pair_attempts,
                "button_pressed": self._button_pressed,
                "faults": vars(self.faults),
            }


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
            self.RequestHandlerClass(conn, client_address, self)
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
            if not sim._accepts_token(self.headers.get("Authorization")):
                return self._send(401, {"error": "user:unauthorized"})
            if path == "/api":
                return self._send(200, simpayloads.device_info(sim.serial, "v2"))
            if path == "/api/measurement":
                return self._answer_measurement("v2")
        else:
            if path == "/api":
                return self._send(200, simpayloads.device_info(sim.serial, "v1"))
            if path == "/api/v1/data":
                return self._answer_measurement("v1")
        return self._send(404, {"error": "request:not-found"})

    def do_POST(self) -> None:
        sim = self.server.sim
        path = self.path.split("?", 1)[0]
        body = self._body()
        if path == "/api/user" and self._tls:
            status, payload = sim._pair(body.get("name") if isinstance(body, dict) else None)
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
            status, payload, telegram = sim._measurement(api)
            self._send(status, payload)
            if telegram is not None:
                # Logged only once the answer left, so the log never claims an unsent
                # reading; stop() waits for this line (see _close_listener).
                sim._served_measurement(telegram)
        finally:
            with sim._served:
                sim._in_flight -= 1
                sim._served.notify_all()

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
