"""Bearer device tokens for DRF, and the scope checks built on them."""

from __future__ import annotations

from rest_framework import authentication, exceptions, permissions

from telemetry import token_cache
from telemetry.models import DeviceToken


class DeviceTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <token>``; request.auth is the DeviceToken."""

    keyword = "Bearer"

    def authenticate(self, request):
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
        found = token_cache.lookup(raw, getattr(view, "prefetch_cache_keys", None))
        token = found.token
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        # Cache values the view asked for, read in the same round trip as the token check.
        request.prefetched_cache = found.prefetched
        # A device token acts for no user; views read request.auth.
        return (DeviceTokenPrincipal(token), token)

    def authenticate_header(self, request) -> str:
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


class HasIngestScope(permissions.BasePermission):
    message = "This token has no ingest scope."

    def has_permission(self, request, view) -> bool:
        token = request.auth
        return isinstance(token, DeviceToken) and token.has_scope(DeviceToken.SCOPE_INGEST)
