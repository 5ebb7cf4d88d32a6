"""/v1/schema and /v1/docs: public, complete, true to the wire format, and within the
site's Content-Security-Policy; the browsable API for logged-in users."""

from __future__ import annotations

import json
import os
import re

import pytest
import yaml
from django.urls import get_resolver
from drf_spectacular.validation import validate_schema

import p1wire as wire
from tests.conftest import bearer
from tests.tools import tool_missing

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def schema(client) -> dict:
    response = client.get("/v1/schema", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_schema_is_public_even_with_a_stale_token(client):
    response = client.get("/v1/schema", headers=bearer("revoked-or-garbage-token-value"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    document = yaml.safe_load(response.content)
    assert document["openapi"].startswith("3.")
    validate_schema(document)


def test_schema_is_served_as_json_on_request(client):
    response = client.get("/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert json.loads(response.content)["info"]["title"] == "P1 Platform API"


def test_every_api_route_is_documented(schema):
    routes = set()
    for pattern in get_resolver().url_patterns:
        if str(pattern.pattern) == "v1/":
            for sub in pattern.url_patterns:
                route = re.sub(r"\(\?P<(\w+)>[^)]+\)", r"{\1}", str(sub.pattern))
                routes.add("/v1/" + route.strip("^$"))
    assert routes == set(schema["paths"])


@pytest.mark.parametrize("code", ["401", "403", "429", "503"])
def test_every_operation_documents_auth_and_outage_errors_as_problems(schema, code):
    for path, method, operation in operations(schema):
        response = operation["responses"].get(code)
        assert response, f"{method} {path} lacks {code}"
        assert list(response["content"]) == [PROBLEM]


def test_read_operations_document_bad_parameters_and_unknown_devices(schema):
    for path, method, operation in operations(schema):
        if method == "get" and path != "/v1/devices":
            assert {"200", "400", "404"} <= set(operation["responses"]), path
            names = {p["name"] for p in operation["parameters"]}
            assert "device_id" in names, path


def test_ingest_documents_every_error_it_answers(schema):
    responses = schema["paths"]["/v1/ingest"]["post"]["responses"]
    assert set(responses) == {"200", "400", "401", "403", "413", "415", "422", "429", "503"}
    assert responses["429"]["headers"]["Retry-After"]["required"] is True
    assert responses["503"]["headers"]["Retry-After"]["required"] is True
    problem = responses["422"]["content"][PROBLEM]["schema"]
    assert problem == {"$ref": "#/components/schemas/BatchProblem"}


def test_sample_schema_is_the_wire_format(schema):
    sample = schema["components"]["schemas"]["Sample"]
    assert list(sample["properties"]) == list(wire.REQUIRED_FIELDS) + list(wire.OPTIONAL_FIELDS)
    assert sample["required"] == list(wire.REQUIRED_FIELDS)
    assert sample["additionalProperties"] is False
    assert sample["properties"]["tariff"]["maximum"] == 4
    assert sample["properties"]["gas_m3"]["nullable"] is True


def test_query_and_path_parameters_are_described(schema):
    series = {p["name"]: p for p in schema["paths"]["/v1/series"]["get"]["parameters"]}
    assert series["interval"]["schema"]["enum"] == ["15m", "1h", "1d", "1w", "1mo"]
    assert {"start", "end", "device_id"} <= set(series)
    (month,) = [
        p for p in schema["paths"]["/v1/capacity/month/{month}"]["get"]["parameters"]
        if p["in"] == "path"
    ]  # fmt: skip
    assert month["schema"]["pattern"] == r"^20\d{2}-(0[1-9]|1[0-2])$"
    quarters = {p["name"]: p for p in schema["paths"]["/v1/capacity/quarters"]["get"]["parameters"]}
    assert quarters["date"]["required"] is True


def test_docs_page_loads_only_local_files(client):
    response = client.get("/v1/docs")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Content-Security-Policy" in response
    sources = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', page)
    assert sources
    for source in sources:
        assert source.startswith("/static/") or source.startswith("/v1/docs?"), source
    assert "<style" not in page
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
    for source in sources:
        assert client.get(source).status_code == 200, source


def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is not installed (Debian packages chromium and chromium-driver)"
    return None


@pytest.mark.django_db(transaction=True)
def test_docs_render_in_a_browser_without_csp_violations(server):
    missing = _browser_missing()
    if missing:
        tool_missing(missing)  # fails instead where CI installed every tool
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        driver.get(f"{server.url}/v1/docs")
        WebDriverWait(driver, 30).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")) >= 7
        )
        paths = {e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        log = driver.get_log("browser")
    finally:
        driver.quit()
    assert "/v1/ingest" in paths
    violations = [e["message"] for e in log if "Content Security Policy" in e["message"]]
    assert violations == []


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


def test_browsable_api_for_a_logged_in_browser(owner_client, device):
    response = owner_client.get("/v1/devices", HTTP_ACCEPT="text/html,*/*;q=0.8")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"home-p1" in response.content


@pytest.mark.parametrize("accept", [None, "*/*", "application/json"])
def test_api_clients_still_get_json(owner_client, device, accept):
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    response = owner_client.get("/v1/devices", **headers)
    assert response["Content-Type"] == "application/json"
    assert response.json()["devices"][0]["device_id"] == "home-p1"


def test_errors_stay_problem_json_for_a_browser(client, device):
    response = client.get("/v1/devices", HTTP_ACCEPT="text/html")
    assert response.status_code == 401
    assert response["Content-Type"] == PROBLEM


# Found by tests/test_schema_fuzz.py: far-off years answered 500 (date overflow) or with
# local-mean-time offsets such as +00:17:30, which are not RFC 3339 date-times.
@pytest.mark.parametrize(
    "url",
    [
        "/v1/capacity/quarters?date=0796-12-30",
        "/v1/capacity/quarters?date=9999-12-31",
        "/v1/capacity/month/9999-12",
        "/v1/capacity/month/2100-01",
        "/v1/capacity/months?end=9999-12",
        "/v1/series?start=0001-01-01&end=2026-01-01",
        "/v1/series?end=9999-12-31T23:59:59%2B00:00",
    ],
)
def test_years_outside_2000_to_2099_are_bad_parameters(client, device, read_token, url):
    response = client.get(url, headers=bearer(read_token))
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == PROBLEM
    (messages,) = response.json()["errors"].values()
    assert "2000" in messages[0]


def test_list_endpoints_answer_the_documented_object(schema):
    # drf-spectacular documents list actions as arrays unless told otherwise.
    for path in ("/v1/devices", "/v1/series", "/v1/realtime"):
        ok = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        assert "$ref" in ok["schema"], path


@pytest.mark.parametrize("device_id", ["e\x00x", "HOME-P1", "home p1", "-x", "x" * 65])
def test_impossible_device_ids_are_unknown_devices(client, owner, device_id):
    # Found by fuzzing: a NUL byte reached PostgreSQL, which refuses it (500).
    client.force_login(owner)
    response = client.get("/v1/realtime", {"device_id": device_id})
    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM
