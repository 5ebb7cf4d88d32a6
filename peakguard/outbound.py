"""Requests the server makes on a user's behalf (the peak-guard webhook), made safe.

A webhook URL is typed by a user, so it must not become a way to reach what only the
server can reach (SSRF): its own loopback services, the LAN behind it, or a cloud
metadata endpoint. The rules:

- The host is resolved here (``getaddrinfo`` in a helper thread, bounded by the request's
  deadline) and the request is refused if ANY address it resolves to is loopback,
  link-local, private (RFC 1918, CGNAT, fc00::/7), unspecified, multicast or reserved,
  also when hidden in an IPv6 form (IPv4-mapped, 6to4, NAT64). ``allow_private`` (the
  PEAKGUARD_ALLOW_PRIVATE_TARGETS setting) permits loopback, private and link-local
  targets, for development and for receivers on the LAN; cloud metadata addresses,
  unspecified, multicast and reserved ones stay refused.
- The connection goes to an address that was vetted, not to a second lookup: httpcore's
  network backend is replaced by one that ignores the host name it is handed and dials
  the vetted addresses, so DNS rebinding between check and connect is impossible. The
  URL is not rewritten, so the Host header, TLS SNI and certificate verification all
  still use the host name.
- HTTPS with certificate verification. Plain HTTP only to a loopback address, and only
  when private targets are allowed (promise 3: plain HTTP only to loopback in
  development). URLs with credentials are refused (they would be logged and stored).
- No redirect is followed (httpcore never follows one): a 3xx is a failed delivery, so a
  public receiver cannot bounce the request to a private address.
- ``TIMEOUT_S`` bounds the whole request (resolve, connect, TLS, send, answer): every
  socket operation gets the time left before one deadline, so a receiver that trickles
  bytes cannot hold a worker longer. At most ``MAX_BODY_BYTES`` of the answer is read.

Errors leave this module as WebhookRefused (the target is not allowed: retrying cannot
help) or WebhookFailed (this attempt failed: a later one may succeed). No Django here.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import httpcore

TIMEOUT_S = 5.0
MAX_BODY_BYTES = 1024
MAX_URL_LENGTH = 500

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Never reachable through the allow-private setting: instance credentials live there.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# What the allow-private setting opens up besides loopback and link-local: RFC 1918,
# carrier-grade NAT and unique-local IPv6. Python's is_private is wider (test and
# benchmark nets, 240/4, ...); those stay refused as reserved.
PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class WebhookError(Exception):
    """Base of the two outcomes callers handle."""


class WebhookRefused(WebhookError):
    """The target is not allowed (scheme, address, URL form): never retried."""


class WebhookFailed(WebhookError):
    """This attempt failed (network, timeout, non-2xx answer, redirect): may be retried."""


@dataclass(frozen=True)
class Target:
    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries and the network would reach, if any."""
    if address.version != 6:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: IPAddress, *, allow_private: bool) -> str | None:
    """Why ``address`` may not be a webhook target, or None when it may."""
    inner = _embedded_ipv4(address)
    if inner is not None:
        problem = address_problem(inner, allow_private=allow_private)
        return None if problem is None else f"{problem} (inside {address})"
    if address in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address"
    if address.is_unspecified:
        return f"{address} is an unspecified address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    kind = None
    if address.is_loopback:
        kind = "loopback"
    elif address.is_link_local:
        kind = "link-local"
    elif any(address in network for network in PRIVATE_NETWORKS):
        kind = "private"
    if kind is not None:
        return None if allow_private else f"{address} is a {kind} address"
    if address.is_reserved or not address.is_global:
        return f"{address} is a reserved address"
    return None


def check_url(url: str, *, allow_private: bool) -> tuple[str, str, int]:
    """Static checks (no lookup): the URL's scheme, host and port, or WebhookRefused."""
    if len(url) > MAX_URL_LENGTH:
        raise WebhookRefused(f"URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"not a valid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise WebhookRefused(f"scheme {parts.scheme!r} is not allowed; use https://")
    host = parts.hostname
    if not host:
        raise WebhookRefused("URL names no host")
    if parts.username is not None or parts.password is not None:
        raise WebhookRefused("credentials in the URL are not allowed; use a secret path")
    if scheme == "http" and not allow_private:
        raise WebhookRefused("plain http:// is not allowed; use https://")
    return scheme, host, port or (443 if scheme == "https" else 80)


def resolve(host: str, port: int, timeout_s: float) -> tuple[IPAddress, ...]:
    """Every address ``host`` resolves to; getaddrinfo has no timeout of its own, so it
    runs in a daemon thread that is abandoned when the time is up."""
    result: list = []

    def lookup() -> None:
        try:
            result.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            result.append(exc)

    thread = threading.Thread(target=lookup, name="peakguard-dns", daemon=True)
    thread.start()
    thread.join(max(timeout_s, 0.0))
    if not result:
        raise WebhookFailed(f"resolving {host} took longer than {timeout_s:.1f} s")
    if isinstance(result[0], OSError):
        raise WebhookFailed(f"cannot resolve {host}: {result[0]}") from result[0]
    addresses = []
    for _family, _type, _proto, _canon, sockaddr in result[0]:
        # Scope ids (fe80::1%eth0) are dropped: the address itself decides.
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise WebhookFailed(f"{host} resolves to no address")
    return tuple(addresses)


def vet(url: str, *, allow_private: bool, timeout_s: float = TIMEOUT_S) -> Target:
    """The URL checked, resolved and its addresses vetted, or WebhookRefused/WebhookFailed."""
    scheme, host, port = check_url(url, allow_private=allow_private)
    addresses = resolve(host, port, timeout_s)
    problems = [address_problem(a, allow_private=allow_private) for a in addresses]
    refused = [p for p in problems if p is not None]
    if refused:
        literal = len(addresses) == 1 and str(addresses[0]) == host.strip("[]")
        raise WebhookRefused(refused[0] if literal else f"{host}: {refused[0]}")
    if scheme == "http" and not all(a.is_loopback for a in addresses):
        raise WebhookRefused("plain http:// is only allowed to a loopback address; use https://")
    return Target(url, scheme, host, port, addresses)


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose every operation gets at most the time left before the deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("the webhook's total time limit was reached")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, self._left(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """Dials the vetted addresses of one target, whatever host name httpcore passes."""

    def __init__(self, target: Target, deadline: float) -> None:
        self._target = target
        self._deadline = deadline
        self._sync = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        if port != self._target.port:  # cannot happen: one pool per vetted target
            raise httpcore.ConnectError(f"port {port} was not vetted")
        last_error: Exception | None = None
        for address in self._target.addresses:
            left = self._deadline - time.monotonic()
            if left <= 0:
                break
            try:
                stream = self._sync.connect_tcp(
                    str(address),
                    port,
                    timeout=left if timeout is None else min(timeout, left),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        if last_error is not None:
            raise last_error
        raise httpcore.ConnectTimeout("the webhook's total time limit was reached")

    def connect_unix_socket(self, *args: typing.Any, **kwargs: typing.Any) -> typing.NoReturn:
        raise httpcore.ConnectError("unix sockets are never a webhook target")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_TRANSPORT_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    ssl.SSLError,
    OSError,
)


@dataclass(frozen=True)
class Delivered:
    status: int
    body: bytes  # at most MAX_BODY_BYTES


def post_json(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    allow_private: bool,
    timeout_s: float = TIMEOUT_S,
    ssl_context: ssl.SSLContext | None = None,
) -> Delivered:
    """POST ``body`` (JSON) to a vetted ``url``; a 2xx answer or WebhookRefused/WebhookFailed.

    ``ssl_context``: trust other than the public CAs (certifi), e.g. a test's own CA.
    """
    deadline = time.monotonic() + timeout_s
    target = vet(url, allow_private=allow_private, timeout_s=timeout_s)
    left = max(deadline - time.monotonic(), 0.001)
    request_headers = {
        "Content-Type": "application/json",
        "Accept": "*/*",
        **headers,
        "Connection": "close",
    }
    context = ssl_context or ssl.create_default_context(cafile=certifi.where())
    try:
        with httpcore.ConnectionPool(
            ssl_context=context,
            network_backend=_PinnedBackend(target, deadline),
            max_connections=1,
            retries=0,
        ) as pool:
            with pool.stream(
                "POST",
                url,
                headers=list(request_headers.items()),
                content=body,
                extensions={
                    "timeout": {"connect": left, "read": left, "write": left, "pool": left}
                },
            ) as response:
                received = _read_limited(response.iter_stream(), MAX_BODY_BYTES)
                status = response.status
    except _TRANSPORT_ERRORS as exc:
        raise WebhookFailed(f"{type(exc).__name__}: {str(exc) or 'no detail'}") from exc
    if 300 <= status < 400:
        raise WebhookFailed(f"answered {status} (a redirect, never followed)")
    if not 200 <= status < 300:
        snippet = received[:200].decode("utf-8", "replace").strip()
        raise WebhookFailed(f"answered {status}" + (f": {snippet}" if snippet else ""))
    return Delivered(status, received)


def _read_limited(chunks: Iterable[bytes], limit: int) -> bytes:
    received = b""
    for chunk in chunks:
        received += chunk
        if len(received) >= limit:
            break
    return received[:limit]
