"""DEVICE_TOKENS: devices and tokens provisioned from the environment (issue 17, point 4).

The form is ``device_id:token,device_id:token``. Read at every start (the container's
entrypoint and the systemd unit run ``manage.py provision_device_tokens``): devices are
created, tokens stored only as hashes with the ingest and read scopes, tokens that left
the list revoked (and active again when they come back), tokens issued in the admin left
alone whatever their label. A bad entry stops start-up with one line naming the variable
and the entry, never the token.
"""

from __future__ import annotations

import secrets

import pytest
from django.core.exceptions import ImproperlyConfigured

from p1common.env import env_device_tokens
from p1common.processes import database_url
from telemetry.models import Device, DeviceToken
from telemetry.provisioning import (
    PROVISIONED_LABEL,
    ProvisioningError,
    provision_device_tokens,
)
from telemetry.tokens import find_active_token, issue_token
from tests.conftest import bearer
from tests.samples import series
from tests.test_settings_and_commands import manage


def token() -> str:
    return secrets.token_urlsafe(32)


def test_pairs_are_read_in_order_with_spaces_and_empty_entries_ignored(monkeypatch):
    first, second, hexed = token(), token(), secrets.token_hex(32)
    monkeypatch.setenv("DEVICE_TOKENS", f" home-p1:{first}, ,attic:{second},attic:{hexed},")
    assert env_device_tokens("DEVICE_TOKENS") == [
        ("home-p1", first),
        ("attic", second),
        ("attic", hexed),
    ]


def test_unset_is_an_empty_list(monkeypatch):
    monkeypatch.delenv("DEVICE_TOKENS", raising=False)
    assert env_device_tokens("DEVICE_TOKENS") == []


SECRET = secrets.token_urlsafe(32)
HEX_SECRET = secrets.token_hex(32)


@pytest.mark.parametrize(
    ("second", "says"),
    [
        (SECRET, "has no device id"),  # a bare token: every token belongs to one device
        (f"{HEX_SECRET}:attic", "the token after the colon must be"),  # written the wrong way round
        (f"Attic:{SECRET}", "the device id"),
        (f":{SECRET}", "the device id"),
        ("attic:", "the token after the colon must be"),
        (f"attic:{SECRET[:20]}", "the token after the colon must be"),  # too short to be 256 bits
        (f"attic:{SECRET[:-1]}!", "the token after the colon must be"),
        (f"attic:{HEX_SECRET}:{SECRET}", "the token after the colon must be"),  # a comma left out
    ],
)
def test_a_bad_entry_is_named_by_its_place_and_its_token_never_shown(monkeypatch, second, says):
    monkeypatch.setenv("DEVICE_TOKENS", f"home-p1:{token()},{second}")
    with pytest.raises(ImproperlyConfigured) as caught:
        env_device_tokens("DEVICE_TOKENS")
    message = str(caught.value)
    assert message.startswith("DEVICE_TOKENS: entry 2 of 2")
    assert says in message
    assert "\n" not in message
    assert SECRET[:20] not in message and HEX_SECRET[:20] not in message


def test_a_token_listed_twice_is_refused(monkeypatch):
    same = token()
    monkeypatch.setenv("DEVICE_TOKENS", f"home-p1:{same},attic:{same}")
    with pytest.raises(ImproperlyConfigured, match=r"entry 2 of 2 .* repeats the token of entry 1"):
        env_device_tokens("DEVICE_TOKENS")


def test_a_bad_entry_stops_start_up_with_one_line():
    result = manage("check", DEVICE_TOKENS=f"home-p1:{token()},{SECRET}")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "DEVICE_TOKENS: entry 2 of 2 has no device id" in lines[0]
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.django_db
def test_devices_are_created_and_tokens_stored_as_hashes_with_ingest_and_read():
    Device.objects.create(device_id="home-p1", name="kept as it is")
    home, attic = token(), token()
    done = provision_device_tokens([("home-p1", home), ("attic", attic)])
    assert done.devices_created == ["attic"] and done.tokens_created == 2
    assert Device.objects.get(device_id="home-p1").name == "kept as it is"
    for device_id, raw in (("home-p1", home), ("attic", attic)):
        found = find_active_token(raw)
        assert found is not None and found.device.device_id == device_id
        assert found.scope_set == {"ingest", "read"}
        assert found.label == PROVISIONED_LABEL and found.provisioned
    stored = list(DeviceToken.objects.values_list("prefix", "token_hash", "label", "scopes"))
    assert not any(home in str(row) or attic in str(row) for row in stored)


@pytest.mark.django_db
def test_next_start_keeps_listed_tokens_revokes_removed_ones_and_leaves_admin_tokens():
    device = Device.objects.create(device_id="home-p1")
    admin_token, admin_raw = issue_token(device, "read", label="dashboard")
    kept, dropped = token(), token()
    provision_device_tokens([("home-p1", kept), ("home-p1", dropped)])

    again = provision_device_tokens([("home-p1", kept)])

    assert (again.tokens_created, again.tokens_kept, again.tokens_revoked) == (0, 1, 1)
    assert find_active_token(kept) is not None
    assert find_active_token(dropped) is None
    assert find_active_token(admin_raw) == admin_token
    # An empty (or unset) list revokes every provisioned token, and only those.
    provision_device_tokens([])
    assert find_active_token(kept) is None and find_active_token(admin_raw) == admin_token


@pytest.mark.django_db
def test_a_token_revoked_in_the_admin_stays_revoked():
    raw = token()
    provision_device_tokens([("home-p1", raw)])
    find_active_token(raw).revoke()
    done = provision_device_tokens([("home-p1", raw)])
    assert done.revoked_in_admin == 1 and find_active_token(raw) is None


@pytest.mark.django_db
def test_an_admin_token_labelled_like_the_list_survives_a_start():
    device = Device.objects.create(device_id="home-p1")
    # The label is free text: the admin's form and `issue_token --label` can type it.
    admin_token, admin_raw = issue_token(device, "read", label=PROVISIONED_LABEL)
    done = provision_device_tokens([("home-p1", token())])
    assert done.tokens_revoked == 0
    assert find_active_token(admin_raw) == admin_token


@pytest.mark.django_db
def test_a_renamed_provisioned_token_still_leaves_with_the_list():
    raw = token()
    provision_device_tokens([("home-p1", raw)])
    DeviceToken.objects.filter(provisioned=True).update(label="kitchen pi")
    done = provision_device_tokens([])
    assert done.tokens_revoked == 1 and find_active_token(raw) is None


@pytest.mark.django_db
def test_a_token_back_in_the_list_after_an_empty_start_is_active_again():
    home, attic = token(), token()
    provision_device_tokens([("home-p1", home), ("attic", attic)])
    # A start without the env file: every provisioned token is revoked...
    assert provision_device_tokens([]).tokens_revoked == 2
    assert find_active_token(home) is None
    # ...and the next start with the file gives the edges their tokens back.
    done = provision_device_tokens([("home-p1", home), ("attic", attic)])
    assert (done.tokens_created, done.tokens_restored, done.revoked_in_admin) == (0, 2, 0)
    assert find_active_token(home) is not None and find_active_token(attic) is not None
    assert DeviceToken.objects.filter(revoked_by_list=True).count() == 0


@pytest.mark.django_db
def test_an_admin_revocation_wins_even_over_a_token_the_list_had_revoked(admin_client):
    raw = token()
    provision_device_tokens([("home-p1", raw)])
    provision_device_tokens([])
    revoked = DeviceToken.objects.get(provisioned=True)
    revoked_at = revoked.revoked_at
    response = admin_client.post(
        "/admin/telemetry/devicetoken/", {"action": "revoke", "_selected_action": [revoked.pk]}
    )
    assert response.status_code == 302
    done = provision_device_tokens([("home-p1", raw)])
    assert (done.tokens_restored, done.revoked_in_admin) == (0, 1)
    assert find_active_token(raw) is None
    assert DeviceToken.objects.get(pk=revoked.pk).revoked_at == revoked_at


@pytest.mark.django_db
def test_the_admin_cannot_mark_or_unmark_a_token_as_provisioned(admin_client):
    raw = token()
    provision_device_tokens([("home-p1", raw)])
    listed = DeviceToken.objects.get(provisioned=True)
    admin_token, admin_raw = issue_token(listed.device, "read", label="dashboard")
    for target, wanted in ((listed, ""), (admin_token, "on")):
        page = admin_client.get(f"/admin/telemetry/devicetoken/{target.pk}/change/")
        assert 'name="provisioned"' not in page.content.decode()
        response = admin_client.post(
            f"/admin/telemetry/devicetoken/{target.pk}/change/",
            {"label": "renamed", "provisioned": wanted, "revoked_by_list": "on"},
        )
        assert response.status_code == 302, response.content.decode()
    listed.refresh_from_db()
    admin_token.refresh_from_db()
    assert (listed.label, listed.provisioned) == ("renamed", True)
    assert (admin_token.label, admin_token.provisioned) == ("renamed", False)
    provision_device_tokens([])
    assert find_active_token(raw) is None
    assert find_active_token(admin_raw) == admin_token


@pytest.mark.django_db
def test_a_token_of_another_device_is_refused_and_nothing_changes():
    raw, other = token(), token()
    provision_device_tokens([("home-p1", raw)])
    with pytest.raises(ProvisioningError) as caught:
        provision_device_tokens([("attic", other), ("next-door", raw)])
    assert str(caught.value) == (
        "DEVICE_TOKENS: entry 2 of 2 (device next-door): its token already belongs to "
        "device home-p1"
    )
    assert not Device.objects.filter(device_id__in=["attic", "next-door"]).exists()
    assert find_active_token(other) is None


@pytest.mark.django_db(transaction=True)
def test_the_start_command_provisions_a_token_that_ingests_and_reads(server, http):
    raw = token()
    result = manage(
        "provision_device_tokens", DATABASE_URL=database_url(), DEVICE_TOKENS=f"garage-p1:{raw}"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "DEVICE_TOKENS: 1 token(s) created, 0 kept, 0 revoked, 0 restored; "
        "devices created: garage-p1"
    )
    assert raw not in result.stdout + result.stderr
    posted = http.post(f"{server.url}/v1/ingest", json={"samples": series(3)}, headers=bearer(raw))
    assert posted.status_code == 200, posted.text
    devices = http.get(f"{server.url}/v1/devices", headers=bearer(raw))
    assert [d["device_id"] for d in devices.json()["devices"]] == ["garage-p1"]
