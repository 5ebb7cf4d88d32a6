"""A meter that replays recorded answers, for the real HomeWizardClient to poll.

The simulator computes every answer from its clock, so it cannot show a meter whose
clock stands still while its readings change, or a meter swapped between two polls.
This one serves a given sequence of payloads, one per measurement request (the last one
again once the sequence is used up): API v2 over TLS with a certificate from the
simulator's CA (the client verifies it in the CA mode), API v1 over plain HTTP.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edgeclient.homewizard import HomeWizardClient, MeterConfig
from edgeclient.simcerts import ensure_certificates
from tests.edge.stand_in import JSONHandler, serve

SERIAL = "5c2faf0ec0d0"  # lowercase hex, as the device and simcerts require
TOKEN = "0123456789ABCDEF0123456789ABCDEF"


class _Server(ThreadingHTTPServer):
    def __init__(self, payloads: Sequence[dict[str, Any]], path: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payloads = list(payloads)
        self.path = path
        self.served = 0
        self.lock = threading.Lock()

    def next_payload(self) -> dict[str, Any]:
        with self.lock:
            payload = self.payloads[min(self.served, len(self.payloads) - 1)]
            self.served += 1
            return payload


class _Handler(JSONHandler):
    server: _Server

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != self.server.path:
            return self._send(404, {"error": "request:not-found"})
        return self._send(200, self.server.next_payload())


@contextmanager
def recorded_meter(
    payloads: Sequence[dict[str, Any]], *, api: str, cert_dir: Path
) -> Iterator[HomeWizardClient]:
    """A HomeWizardClient connected to a server replaying ``payloads``."""
    server = _Server(payloads, "/api/measurement" if api == "v2" else "/api/v1/data")
    config = MeterConfig(host=f"127.0.0.1:{server.server_address[1]}", api=api)  # type: ignore[arg-type]
    certificates = None
    if api == "v2":
        certificates = ensure_certificates(cert_dir, SERIAL)
        config = MeterConfig(
            host=config.host, api="v2", token=TOKEN, ca_file=certificates.ca_file, serial=SERIAL
        )
    thread = serve(server, certificates)
    try:
        with HomeWizardClient(config) as client:
            yield client
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
