"""Bearer device tokens for DRF, the scope checks built on them, and the throttle on
failed token checks per client address."""

from __future__ import annotations

import functools
import ipaddress
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache
from rest_framework import authentication, exceptions, permissions
from rest_framework.throttling import SimpleRateThrottle

from telemetry import token_cache
from telemetry.models import DeviceToken

if TYPE_CHECKING:  # rest_framework.views imports this module (DEFAULT_AUTHENTICATION_CLASSES)
    from django.http import HttpRequest
    from rest_framework.request import Request
    from rest_framework.views import APIView


class DeviceTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <token>``; request.auth is the DeviceToken."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[DeviceTokenPrincipal, DeviceToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        try:
            raw = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Malformed token.") from None
        view = (getattr(request, "parser_context", None) or {}).get("view")
        strikes = BadTokenStrikes.of(request)
        found = token_cache.lookup(
            raw,
            getattr(view, "prefetch_cache_keys", None),
            also=strikes.keys(),
            record_use=not getattr(view, "records_token_use_itself", False),
            counters=getattr(view, "prefetch_counters", None),
        )
        # Checked after the lookup so the strike count costs no extra round trip; the
        # answer is 429 whether or not the token was right, so a blocked address learns
        # nothing from its guesses.
        strikes.refuse_if_blocked(found.also)
        token = found.token
        if token is None:
            strikes.add()
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        # Cache values the view asked for, read in the same round trip as the token check.
        # An attribute of our own on DRF's Request: the view reads it with getattr.
        request.prefetched_cache = found.prefetched  # type: ignore[attr-defined]
        request.prefetched_counts = found.counted  # type: ignore[attr-defined]
        # A device token acts for no user; views read request.auth.
        return (DeviceTokenPrincipal(token), token)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class DeviceTokenPrincipal:
    """Stands in for request.user when a device token authenticated the request."""

    is_authenticated = True
    is_staff = False
    is_superuser = False

    def __init__(self, token: DeviceToken):
        self.token = token

    def __str__(self) -> str:
        return f"token {self.token.prefix}"


def client_address(request: HttpRequest | Request) -> str:
    """The caller's address: Caddy's X-Real-IP when the peer is a trusted proxy."""
    peer = request.META.get("REMOTE_ADDR", "")
    trusted = settings.TRUSTED_PROXIES
    if "*" in trusted or peer in trusted:
        forwarded = request.META.get("HTTP_X_REAL_IP", "").strip()
        try:
            return str(ipaddress.ip_address(forwarded))
        except ValueError:
            pass  # no header, or not an address: the peer is all we know
    return peer


@functools.cache
def parsed_rate(rate: str | None) -> tuple[int | None, int | None]:
    """(count, period in seconds) of a DRF rate such as "600/min"; (None, None): off."""
    # parse_rate never reads self: the rate syntax is DRF's, with no throttle instance.
    return SimpleRateThrottle.parse_rate(None, rate)  # type: ignore[arg-type]


class BadTokenStrikes:
    """Failed token checks per client address in a cache counter.

    Only failures count, so devices behind one NAT address that use good tokens never
    reach the limit; once an address has, every Bearer request from it gets 429 until
    the period that began with its first failure ends. With the cache down the counter
    reads as missing: nobody is throttled (a Redis outage must not lock out devices),
    and tokens are still checked against the database.
    """

    def __init__(self, address: str, limit: int | None, period_s: int | None):
        self.key = f"bad-token:{address}"
        self.limit, self.period_s = limit, period_s

    @classmethod
    def of(cls, request: HttpRequest | Request) -> BadTokenStrikes:
        limit, period_s = parsed_rate(settings.BAD_TOKEN_RATE)
        return cls(client_address(request), limit, period_s)

    def keys(self) -> list[str]:
        return [self.key] if self.limit else []

    def refuse_if_blocked(self, values: dict) -> None:
        if self.limit and (values.get(self.key) or 0) >= self.limit:
            raise exceptions.Throttled(
                wait=self.period_s, detail="Too many invalid tokens from this address."
            )

    def add(self) -> None:
        if not self.limit:
            return
        if cache.add(self.key, 1, timeout=self.period_s):
            return
        try:
            cache.incr(self.key)
        except ValueError:  # expired between add and incr: a new period begins
            cache.add(self.key, 1, timeout=self.period_s)


class HasIngestScope(permissions.BasePermission):
    message = "This token has no ingest scope."

    def has_permission(self, request: Request, view: APIView) -> bool:
        token = request.auth
        return isinstance(token, DeviceToken) and token.has_scope(DeviceToken.SCOPE_INGEST)
