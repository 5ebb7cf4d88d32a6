"""Every error under /v1/ is problem+json, including ones no view anticipated."""

from __future__ import annotations

import json

from django.db import OperationalError
from django.test import RequestFactory

from p1common.problems import ProblemDetailsMiddleware, exception_handler


def test_unexpected_exception_in_a_view_is_a_500_problem():
    response = exception_handler(RuntimeError("boom"), {"view": None})
    assert response.status_code == 500
    assert response["Content-Type"] == "application/problem+json"
    assert "boom" not in response.content.decode()


def test_lost_database_connection_is_a_503_with_retry_after():
    response = exception_handler(OperationalError("connection refused"), {"view": None})
    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0


def test_exception_outside_drf_under_v1_is_a_500_problem():
    middleware = ProblemDetailsMiddleware(lambda request: None)
    request = RequestFactory().get("/v1/anything")
    response = middleware.process_exception(request, ValueError("oops"))
    assert response.status_code == 500
    assert json.loads(response.content)["status"] == 500


def test_errors_outside_v1_are_left_to_django():
    middleware = ProblemDetailsMiddleware(lambda request: None)
    request = RequestFactory().get("/admin/")
    assert middleware.process_exception(request, ValueError("oops")) is None
