"""Devices and tokens provisioned from the environment (DEVICE_TOKENS), at every start.

The list is the whole truth about the tokens it made: each pair's device is created if
missing, each token stored as its hash with the ingest and read scopes, and a token it
made earlier that has left the list is revoked. Tokens are recognised as provisioned by
DeviceToken.provisioned, which neither the admin nor `manage.py issue_token` can set
(the label can be typed anywhere): their tokens are never touched, whatever the label.
A token the list revoked is active again once it is back in the list (one start with the
list empty or missing must not cut off every edge for good); one revoked in the admin
stays revoked (the admin's decision wins; the list cannot bring it back, since its hash
is taken).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from telemetry.models import Device, DeviceToken
from telemetry.tokens import PREFIX_LENGTH, hash_token

# The label given to provisioned tokens, for people: DeviceToken.provisioned is the mark.
PROVISIONED_LABEL = "DEVICE_TOKENS"
PROVISIONED_SCOPES = f"{DeviceToken.SCOPE_INGEST},{DeviceToken.SCOPE_READ}"


class ProvisioningError(ValueError):
    """An entry the database contradicts (one line, naming the entry, never the token)."""


@dataclass(frozen=True)
class Provisioned:
    """What one run changed."""

    devices_created: list[str]
    tokens_created: int
    tokens_kept: int
    tokens_revoked: int
    revoked_in_admin: int
    tokens_restored: int = 0


def provision_device_tokens(
    pairs: Sequence[tuple[str, str]], variable: str = "DEVICE_TOKENS"
) -> Provisioned:
    """Make the database hold exactly the provisioned tokens of ``pairs`` (device id,
    raw token), in one transaction: nothing changes when an entry is refused."""
    hashes = [hash_token(token) for _, token in pairs]
    with transaction.atomic():
        existing = {
            t.token_hash: t
            for t in DeviceToken.objects.select_related("device").filter(token_hash__in=hashes)
        }
        devices = {
            d.device_id: d for d in Device.objects.filter(device_id__in=[p[0] for p in pairs])
        }
        created_devices: list[str] = []
        created = kept = restored = revoked_in_admin = 0
        for place, ((device_id, token), token_hash) in enumerate(
            zip(pairs, hashes, strict=True), 1
        ):
            found = existing.get(token_hash)
            if found is not None:
                if found.device.device_id != device_id:
                    raise ProvisioningError(
                        f"{variable}: entry {place} of {len(pairs)} (device {device_id}): its "
                        f"token already belongs to device {found.device.device_id}"
                    )
                if found.revoked_at is None:
                    kept += 1
                elif found.provisioned and found.revoked_by_list:
                    found.restore()
                    restored += 1
                else:
                    revoked_in_admin += 1
                continue
            device = devices.get(device_id)
            if device is None:
                device = devices[device_id] = Device.objects.create(device_id=device_id)
                created_devices.append(device_id)
            DeviceToken.objects.create(
                device=device,
                label=PROVISIONED_LABEL,
                prefix=token[:PREFIX_LENGTH],
                token_hash=token_hash,
                scopes=PROVISIONED_SCOPES,
                provisioned=True,
            )
            created += 1
        gone = DeviceToken.objects.filter(provisioned=True, revoked_at__isnull=True).exclude(
            token_hash__in=hashes
        )
        revoked = 0
        for stale in gone:
            stale.revoke(by_list=True)  # one by one: each save tells every process's cache
            revoked += 1
    return Provisioned(created_devices, created, kept, revoked, revoked_in_admin, restored)
