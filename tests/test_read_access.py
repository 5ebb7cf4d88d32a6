"""Who may read what: owner, other household, staff, and tokens by scope.

Every read endpoint is checked; a device the caller may not see answers exactly like
one that does not exist.
"""

from __future__ import annotations

import pytest

from telemetry.tokens import issue_token
from tests.conftest import bearer

pytestmark = pytest.mark.django_db

READ_PATHS = [
    "/v1/realtime",
    "/v1/capacity/month/2026-03",
    "/v1/capacity/quarters?date=2026-03-01",
    "/v1/series?interval=1h",
]


def with_device(path: str, device_id: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}device_id={device_id}"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staff", password="staff-pw-123", is_staff=True)


@pytest.mark.parametrize("path", READ_PATHS)
def test_owner_reads_their_device(client, owner, device, path):
    client.force_login(owner)
    assert client.get(with_device(path, device.device_id)).status_code == 200


@pytest.mark.parametrize("path", READ_PATHS)
def test_other_household_gets_the_same_404_as_for_a_missing_device(
    client, device, other_device, path
):
    client.force_login(other_device.owner)
    hidden = client.get(with_device(path, device.device_id))
    missing = client.get(with_device(path, "no-such-device"))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()
    assert hidden["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize("path", READ_PATHS)
def test_staff_reads_every_device(client, staff, device, other_device, path):
    client.force_login(staff)
    assert client.get(with_device(path, device.device_id)).status_code == 200
    assert client.get(with_device(path, other_device.device_id)).status_code == 200


@pytest.mark.parametrize("path", READ_PATHS)
def test_read_token_reads_its_own_device_without_naming_it(client, device, read_token, path):
    assert client.get(path, headers=bearer(read_token)).status_code == 200


@pytest.mark.parametrize("path", READ_PATHS)
def test_read_token_cannot_read_another_device(client, device, other_device, read_token, path):
    response = client.get(with_device(path, other_device.device_id), headers=bearer(read_token))
    assert response.status_code == 404


@pytest.mark.parametrize("path", READ_PATHS)
def test_ingest_only_token_cannot_read(client, device, ingest_token, path):
    response = client.get(path, headers=bearer(ingest_token))
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize("path", [*READ_PATHS, "/v1/devices"])
def test_anonymous_caller_is_401(client, device, path):
    response = client.get(with_device(path, device.device_id))
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"


def test_logged_in_user_must_name_the_device(client, owner, device):
    client.force_login(owner)
    response = client.get("/v1/realtime")
    assert response.status_code == 400
    assert "device_id" in response.json()["errors"]


def test_device_list_shows_only_what_the_caller_may_see(client, owner, device, other_device, staff):
    client.force_login(owner)
    assert [d["device_id"] for d in client.get("/v1/devices").json()["devices"]] == ["home-p1"]
    client.force_login(staff)
    listed = [d["device_id"] for d in client.get("/v1/devices").json()["devices"]]
    assert listed == ["home-p1", "next-door"]
    client.logout()
    token = issue_token(other_device, "read")[1]
    listed = client.get("/v1/devices", headers=bearer(token)).json()["devices"]
    assert [d["device_id"] for d in listed] == ["next-door"]


def test_token_with_both_scopes_reads_and_ingests(client, device):
    token = issue_token(device, "ingest,read")[1]
    assert client.get("/v1/realtime", headers=bearer(token)).status_code == 200
