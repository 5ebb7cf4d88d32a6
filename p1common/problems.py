"""Errors as application/problem+json (RFC 9457), mapped at one point.

DRF views go through ``exception_handler``; everything else under /v1/ (unknown paths,
errors raised outside DRF) is caught by ``ProblemDetailsMiddleware``. A database that
cannot be reached becomes 503 with Retry-After, so the edge backs off and retries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
API_PREFIX = "/v1/"
# Headers of the original error response that a client needs to act on.
_KEPT_HEADERS = ("Retry-After", "Allow", "WWW-Authenticate")


class DatabaseUnavailable(drf_exceptions.APIException):
    status_code = 503
    default_detail = "The database cannot be reached; retry later."
    default_code = "database_unavailable"


class PayloadTooLarge(drf_exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class UnprocessableBatch(drf_exceptions.APIException):
    """A batch with invalid samples: nothing of it was written."""

    status_code = 422
    default_detail = "The batch has invalid samples; nothing was written."
    default_code = "invalid_samples"

    def __init__(self, errors: list[dict[str, Any]], detail: str | None = None):
        super().__init__(detail)
        self.errors = errors


def problem_response(
    status: int, detail: str | None = None, *, title: str | None = None, **extra: Any
) -> HttpResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    body.update(extra)
    return HttpResponse(json.dumps(body), status=status, content_type=PROBLEM_CONTENT_TYPE)


def _is_unreachable_database(exc: BaseException) -> bool:
    # IntegrityError and friends are bugs or bad data, not an outage.
    return isinstance(exc, (OperationalError, InterfaceError))


def exception_handler(exc: Exception, context: dict) -> HttpResponse | None:
    """DRF's EXCEPTION_HANDLER: every error a DRF view raises, as problem+json."""
    if isinstance(exc, DatabaseError) and _is_unreachable_database(exc):
        logger.warning("database unavailable: %s", exc)
        exc = DatabaseUnavailable()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, (Http404, PermissionDenied)):
        pass  # DRF's own handler maps these.
    elif not isinstance(exc, drf_exceptions.APIException):
        logger.exception("unhandled error in %s", context.get("view"))
        return problem_response(500, "An unexpected error occurred.")

    response = drf_exception_handler(exc, context)
    if response is None:  # pragma: no cover - DRF handles every APIException
        return problem_response(500, "An unexpected error occurred.")
    extra: dict[str, Any] = {}
    data = response.data
    if isinstance(exc, UnprocessableBatch):
        extra["errors"] = exc.errors
        detail = str(exc.detail)
    elif isinstance(data, dict) and set(data) == {"detail"}:
        detail = str(data["detail"])
    else:
        detail = "The request is not valid."
        extra["errors"] = data
    if isinstance(exc, DatabaseUnavailable):
        response["Retry-After"] = str(settings.DB_RETRY_AFTER_S)
    problem = problem_response(response.status_code, detail, **extra)
    for header in _KEPT_HEADERS:
        if header in response:
            problem[header] = response[header]
    return problem


class ProblemDetailsMiddleware:
    """Under /v1/: any error response that is not yet problem+json becomes one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            request.path.startswith(API_PREFIX)
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE)
        ):
            problem = problem_response(response.status_code)
            for header in _KEPT_HEADERS:
                if header in response:
                    problem[header] = response[header]
            return problem
        return response

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not request.path.startswith(API_PREFIX):
            return None
        if _is_unreachable_database(exc):
            response = problem_response(503, DatabaseUnavailable.default_detail)
            response["Retry-After"] = str(settings.DB_RETRY_AFTER_S)
            return response
        if isinstance(exc, Http404):
            return problem_response(404)
        logger.exception("unhandled error at %s", request.path)
        return problem_response(500, "An unexpected error occurred.")
