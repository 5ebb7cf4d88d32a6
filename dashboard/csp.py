"""The Content-Security-Policy the Caddyfile sends, also sent by the dashboard's views.

Sending it from Django too means the browser tests (which talk to gunicorn directly)
prove the pages need no inline script or style, and a deployment without Caddy keeps
the protection.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponseBase

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADER = "Content-Security-Policy"


def with_csp(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Add the policy to a view's answers (unless the view set its own)."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if HEADER not in response:
            response[HEADER] = POLICY
        return response

    return wrapped
