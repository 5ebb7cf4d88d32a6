"""Webhook receivers for tests: real HTTP servers on 127.0.0.1, each in its own thread."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

AWAIT_S = 15.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """Records every POST and answers from ``statuses`` in turn (then 204).

    ``gate``: when given, each answer waits until the test sets it, so a test can prove
    that something happened while a delivery was still in flight.
    """

    def __init__(
        self,
        statuses: list[int] | None = None,
        *,
        gate: threading.Event | None = None,
        extra_headers: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.statuses = list(statuses or [])
        self.gate = gate
        self.extra_headers = extra_headers or {}
        self.received: list[Received] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver._record(Received(self.path, dict(self.headers.items()), body))
                if receiver.gate is not None:
                    receiver.gate.wait(AWAIT_S)
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.send_response(status)
                for name, value in receiver.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                """No access log on the test's stderr."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.tls = tls is not None
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        if self.tls:
            return f"https://localhost:{self.port}/hook"
        return f"http://127.0.0.1:{self.port}/hook"

    def _record(self, item: Received) -> None:
        with self._changed:
            self.received.append(item)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout_s: float = AWAIT_S) -> list[Received]:
        """Block until at least ``count`` requests arrived (fails after ``timeout_s``)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout_s):
                raise AssertionError(
                    f"expected {count} webhook requests within {timeout_s} s, "
                    f"got {len(self.received)}"
                )
            return list(self.received)

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def raw_server(
    serve: Callable[[socket.socket], None], *, wrap: ssl.SSLContext | None = None
) -> Iterator[int]:
    """A TCP server on 127.0.0.1 running ``serve(connection)`` per connection; yields
    its port. Connections are closed when the block ends."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()
    connections: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        for conn in connections:
            conn.close()


def never_answers(release: threading.Event) -> Callable[[socket.socket], None]:
    def serve(conn: socket.socket) -> None:
        release.wait(AWAIT_S)

    return serve


def trickles(release: threading.Event, step_s: float) -> Callable[[socket.socket], None]:
    """Answers one byte at a time, never finishing the status line's headers."""

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
                conn.sendall(bytes([byte]))
                if release.wait(step_s):
                    return

    return serve
