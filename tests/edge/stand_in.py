"""What the stand-in meters (recorded_meter, scripted_meter) share: a JSON handler that
logs nothing, and a loopback server served from a thread, over TLS with a certificate of
edgeclient.simcerts for API v2.

They stand in where simulate_p1 cannot: a given sequence of answers, other products, every
documented pairing error. They run in the test's process, as threads, so a test can script
them; the simulator itself runs as a child (p1common.processes.start_simulator).
"""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edgeclient.simcerts import SimulatorCertificates

# A short poll interval keeps shutdown() quick.
SERVE_POLL_S = 0.05


class JSONHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: one line per request would drown the test's output."""

    def _send(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(
    server: ThreadingHTTPServer, certificates: SimulatorCertificates | None = None
) -> threading.Thread:
    """Serve ``server`` from a daemon thread, over TLS when given ``certificates``."""
    server.daemon_threads = True
    if certificates is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificates.cert_file, certificates.key_file)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": SERVE_POLL_S}, daemon=True
    )
    thread.start()
    return thread
