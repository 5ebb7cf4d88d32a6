"""Device isolation on every endpoint, through a real gunicorn process.

Device A's credentials never read or write device B, and the answer about B is the
answer about a device that does not exist: same status, same body, so nobody learns
which device ids are taken. Scopes hold on every endpoint: ``read`` cannot ingest,
``ingest`` cannot read. A logged-in user sees the devices they own and no other.

test_every_route_is_classified fails when an endpoint is added without being put in
one of the lists below, so a new endpoint cannot skip these checks.
"""

from __future__ import annotations

import httpx
import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from telemetry.models import Device, Sample
from telemetry.tokens import issue_token
from tests.conftest import bearer
from tests.hostile.helpers import assert_problem
from tests.samples import series

pytestmark = pytest.mark.django_db(transaction=True)

MISSING = "no-such-device"
# Every read endpoint under /v1/ that takes ?device_id=, by URL name.
DEVICE_READS = {
    "realtime-list": "/v1/realtime",
    "series-list": "/v1/series?interval=1h&start=2026-03-01&end=2026-03-02",
    "capacity-month": "/v1/capacity/month/2026-03",
    "capacity-months": "/v1/capacity/months?end=2026-03&count=2",
    "capacity-quarters": "/v1/capacity/quarters?date=2026-03-01",
    "capacity-register-breaks": "/v1/capacity/register-breaks?start=2026-03-01&end=2026-03-02",
    "export-list": "/v1/export?kind=quarters&start=2026-03-01&end=2026-03-02",
    "capacity-reconciliation": "/v1/capacity/reconciliation?end=2026-03&count=2",
}
LIST_READS = {"devices-list": "/v1/devices"}
WRITES = {"ingest-list": "/v1/ingest", "meter-history-list": "/v1/meter-history"}
# Public by design (docs/adr/0004): they name no device and hold no data.
PUBLIC = {"schema": "/v1/schema", "docs": "/v1/docs"}
# Pages for people, outside /v1/: the dashboard is checked below; the rest hold no data.
PAGES = {"dashboard": "/", "login": "/login", "logout": "/logout", "healthz": "/healthz"}
PAGES |= {"readyz": "/readyz", "favicon": "/favicon.ico"}
# Names every device: for the operator's scraper only (METRICS_TOKEN or METRICS_ALLOW_IPS),
# never for a device token or a household's session.
OPERATOR = {"metrics": "/metrics"}


def route_names() -> set[str]:
    """Every named route of the project except the Django admin (staff only)."""
    names: set[str] = set()

    def walk(patterns, namespace: str | None) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace == "admin":
                    continue
                walk(pattern.url_patterns, pattern.namespace or namespace)
            elif isinstance(pattern, URLPattern) and pattern.name:
                names.add(pattern.name)

    walk(get_resolver().url_patterns, None)
    return names


def test_every_route_is_classified():
    known = DEVICE_READS.keys() | LIST_READS.keys() | WRITES.keys() | PUBLIC.keys()
    known |= OPERATOR.keys()
    assert route_names() - known - PAGES.keys() == set(), "classify the new route here"


def with_device(path: str, device_id: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}device_id={device_id}"


@pytest.fixture
def b_has_data(other_device) -> Device:
    """Device B with readings, so a leak would have something to show."""
    from django.utils import timezone

    from telemetry.pipeline import ingest_batch
    from telemetry.validation import validate_samples

    columns, errors = validate_samples(series(900, step_s=10), now=timezone.now())
    assert not errors
    ingest_batch(other_device, columns)
    return other_device


def log_in(http: httpx.Client, user) -> None:
    """A real session for ``user`` in the database the server reads, on ``http``."""
    client = Client()
    client.force_login(user)
    http.cookies.set("sessionid", client.cookies["sessionid"].value)


def assert_same_answer(hidden: httpx.Response, missing: httpx.Response, status: int) -> None:
    assert hidden.status_code == missing.status_code == status, (hidden.text, missing.text)
    assert hidden.headers["content-type"] == missing.headers["content-type"]
    assert hidden.content == missing.content


@pytest.mark.parametrize("path", DEVICE_READS.values(), ids=DEVICE_READS.keys())
def test_token_of_a_reads_b_exactly_like_a_missing_device(
    http, server, device, b_has_data, read_token, path
):
    hidden = http.get(
        server.url + with_device(path, b_has_data.device_id), headers=bearer(read_token)
    )
    missing = http.get(server.url + with_device(path, MISSING), headers=bearer(read_token))
    assert_same_answer(hidden, missing, 404)
    assert_problem(hidden, 404)
    own = http.get(server.url + with_device(path, device.device_id), headers=bearer(read_token))
    assert own.status_code == 200, own.text


def test_token_of_a_writes_b_exactly_like_a_missing_device(
    http, server, device, b_has_data, ingest_token
):
    before = Sample.objects.filter(device=b_has_data).count()
    url = f"{server.url}/v1/ingest"

    def post(device_id: str) -> httpx.Response:
        body = {"device_id": device_id, "samples": series(1)}
        return http.post(url, json=body, headers=bearer(ingest_token))

    assert_same_answer(post(b_has_data.device_id), post(MISSING), 403)
    assert Sample.objects.filter(device=b_has_data).count() == before
    assert not Sample.objects.filter(device=device).exists()


def test_token_of_a_writes_b_meter_history_exactly_like_a_missing_device(
    http, server, device, b_has_data, ingest_token
):
    from capacity.models import MeterMonthPeak

    url = f"{server.url}/v1/meter-history"

    def post(device_id: str) -> httpx.Response:
        body = {
            "device_id": device_id,
            "read_at": "2026-03-02T10:00:00+01:00",
            "months": [{"month": "2026-02", "peak_kw": 4.2, "peak_ts": None}],
            "current": None,
        }
        return http.post(url, json=body, headers=bearer(ingest_token))

    assert_same_answer(post(b_has_data.device_id), post(MISSING), 403)
    assert not MeterMonthPeak.objects.exists()
    assert post(device.device_id).status_code == 200
    assert list(MeterMonthPeak.objects.values_list("device_id", flat=True)) == [device.pk]


def test_device_list_of_a_token_names_its_own_device_only(
    http, server, device, b_has_data, read_token
):
    response = http.get(f"{server.url}/v1/devices", headers=bearer(read_token))
    assert [d["device_id"] for d in response.json()["devices"]] == [device.device_id]


@pytest.mark.parametrize(
    "path", [*DEVICE_READS.values(), *LIST_READS.values()], ids=[*DEVICE_READS, *LIST_READS]
)
def test_ingest_token_cannot_read_anything(http, server, device, ingest_token, path):
    response = http.get(server.url + path, headers=bearer(ingest_token))
    assert_problem(response, 403)


def test_read_token_cannot_ingest(http, server, device, read_token):
    url = f"{server.url}/v1/ingest"
    response = http.post(url, json={"samples": series(1)}, headers=bearer(read_token))
    assert_problem(response, 403)
    assert not Sample.objects.exists()


@pytest.mark.parametrize(
    "path", [*DEVICE_READS.values(), *LIST_READS.values()], ids=[*DEVICE_READS, *LIST_READS]
)
def test_token_with_both_scopes_reads_every_endpoint(http, server, device, path):
    token = issue_token(device, "ingest,read")[1]
    response = http.get(server.url + path, headers=bearer(token))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", DEVICE_READS.values(), ids=DEVICE_READS.keys())
def test_user_reads_another_households_device_exactly_like_a_missing_one(
    http, server, owner, device, b_has_data, path
):
    log_in(http, owner)
    hidden = http.get(server.url + with_device(path, b_has_data.device_id))
    missing = http.get(server.url + with_device(path, MISSING))
    assert_same_answer(hidden, missing, 404)
    own = http.get(server.url + with_device(path, device.device_id))
    assert own.status_code == 200, own.text


def test_user_sees_only_their_own_devices_in_the_list_and_the_dashboard(
    http, server, owner, device, b_has_data
):
    log_in(http, owner)
    listed = http.get(f"{server.url}/v1/devices").json()["devices"]
    assert [d["device_id"] for d in listed] == [device.device_id]
    page = http.get(f"{server.url}/")
    assert page.status_code == 200
    assert device.device_id in page.text
    assert b_has_data.device_id not in page.text
    hidden = http.get(f"{server.url}/?device={b_has_data.device_id}")
    missing = http.get(f"{server.url}/?device={MISSING}")
    assert_same_answer(hidden, missing, 404)


def test_user_session_cannot_ingest(http, server, owner, device):
    log_in(http, owner)
    url = f"{server.url}/v1/ingest"
    response = http.post(url, json={"samples": series(1)})
    assert_problem(response, 403)
    assert not Sample.objects.exists()


@pytest.mark.parametrize(
    "path",
    [*DEVICE_READS.values(), *LIST_READS.values(), *WRITES.values()],
    ids=[*DEVICE_READS, *LIST_READS, *WRITES],
)
def test_every_api_endpoint_refuses_a_caller_without_credentials(http, server, device, path):
    method = "POST" if path in WRITES.values() else "GET"
    response = http.request(method, server.url + path, json={"samples": series(1)})
    assert_problem(response, 401)


@pytest.mark.parametrize("path", PUBLIC.values(), ids=PUBLIC.keys())
def test_public_docs_name_no_device(http, server, owner, path):
    # An id no example in the schema could hold by chance.
    secret = Device.objects.create(device_id="household-5f3a9c", owner=owner)
    response = http.get(server.url + path)
    assert response.status_code == 200
    assert secret.device_id not in response.text


@pytest.mark.parametrize("path", OPERATOR.values(), ids=OPERATOR.keys())
def test_operator_pages_are_hidden_from_device_tokens_and_households(
    http, server, owner, device, b_has_data, path
):
    token = issue_token(device, "ingest,read")[1]
    for headers in ({}, bearer(token)):
        response = http.get(server.url + path, headers=headers)
        assert response.status_code == 404, response.text
        assert b_has_data.device_id not in response.text
    log_in(http, owner)
    response = http.get(server.url + path)
    assert response.status_code == 404
    assert b_has_data.device_id not in response.text
