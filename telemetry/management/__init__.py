"""What the operator commands that take device ids share."""

from __future__ import annotations

from django.core.management.base import CommandError
from django.db.models import QuerySet

from telemetry.models import Device


def devices_named(device_ids: list[str]) -> QuerySet[Device]:
    """The devices ``device_ids`` names (every device when it names none); an id with
    no device stops the command with one line naming it."""
    devices = Device.objects.all()
    if not device_ids:
        return devices
    devices = devices.filter(device_id__in=device_ids)
    missing = set(device_ids) - set(devices.values_list("device_id", flat=True))
    if missing:
        raise CommandError(f"device_ids: no device {', '.join(sorted(missing))}")
    return devices
