"""Who may read which device: one place, used by every read endpoint.

A device another household owns answers exactly like a device that does not exist
(404), so the API never reveals which device ids are taken.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from rest_framework import exceptions, permissions, serializers, viewsets
from rest_framework.request import Request
from rest_framework.views import APIView

from telemetry.models import DEVICE_ID_VALIDATOR, Device, DeviceToken


class CanRead(permissions.BasePermission):
    """A logged-in user, or a device token with the read scope."""

    message = "This token has no read scope."

    def has_permission(self, request: Request, view: APIView) -> bool:
        token = request.auth
        if isinstance(token, DeviceToken):
            return token.has_scope(DeviceToken.SCOPE_READ)
        return bool(request.user and request.user.is_authenticated)


def visible_devices(request: Request) -> QuerySet[Device]:
    token = request.auth
    if isinstance(token, DeviceToken):
        return Device.objects.filter(pk=token.device_id)
    user = request.user
    if user.is_staff:
        return Device.objects.all()
    if isinstance(user, AnonymousUser):  # cannot happen: CanRead let no anonymous caller in
        raise exceptions.NotAuthenticated()
    return Device.objects.filter(owner=user)


def readable_device(request: Request, device_id: str | None) -> Device:
    """The device named by ?device_id= (a token may leave it out for its own device)."""
    token = request.auth
    if isinstance(token, DeviceToken) and device_id in (None, ""):
        return token.device
    if not device_id:
        raise exceptions.ValidationError({"device_id": ["This parameter is required."]})
    if not DEVICE_ID_VALIDATOR.regex.fullmatch(device_id):  # type: ignore[union-attr]  # stubs: str | Pattern; an instance's regex is always compiled
        # No device can have this id; and PostgreSQL refuses some of them (a NUL byte).
        raise exceptions.NotFound("No such device.")
    try:
        return visible_devices(request).get(device_id=device_id)
    except Device.DoesNotExist:
        raise exceptions.NotFound("No such device.") from None


class ReadViewSet(viewsets.ViewSet):
    """Base of the read endpoints: the device the caller may read, then the action's
    query parameters parsed by its query serializer in that device's zone.

    The access check reads the primary, always: a device given to another owner a
    moment ago is refused at once. An action then runs its selectors under
    p1common.replica.replica_reads() where a moment-old answer is fine.
    """

    permission_classes = [CanRead]

    def read(
        self, request: Request, query: type[serializers.Serializer] | None = None, **path: str
    ) -> tuple[Device, dict[str, Any]]:
        device = readable_device(request, request.query_params.get("device_id"))
        if query is None:
            return device, {}
        parsed = query(
            data={**request.query_params.dict(), **path},
            context={"tz": ZoneInfo(device.timezone)},
        )
        parsed.is_valid(raise_exception=True)
        return device, parsed.validated_data
