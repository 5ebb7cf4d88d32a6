"""Read endpoints of the telemetry app: the caller's devices and history series."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, viewsets
from rest_framework.response import Response

from p1common.openapi import READ_ERRORS, problems
from telemetry.access import CanRead, readable_device, visible_devices
from telemetry.openapi import DEVICE_LIST, SERIES, SERIES_PARAMS
from telemetry.series import INTERVALS, SeriesRangeError, series
from telemetry.timegrid import FIRST_YEAR, LAST_YEAR

DEFAULT_SPAN = {
    "15m": timedelta(days=1),
    "1h": timedelta(days=2),
    "1d": timedelta(days=31),
    "1w": timedelta(weeks=13),
    "1mo": timedelta(days=366),
}


class DeviceViewSet(viewsets.ViewSet):
    """The devices the caller may read."""

    permission_classes = [CanRead]

    @extend_schema(
        operation_id="devices",
        summary="The devices the caller may read",
        description="A token: its own device. A user: the devices they own; staff: all.",
        responses={200: DEVICE_LIST, **problems(401, 403, 429, 503)},
    )
    def list(self, request):
        devices = visible_devices(request).order_by("device_id")
        return Response(
            {
                "devices": [
                    {
                        "device_id": d.device_id,
                        "name": d.name,
                        "timezone": d.timezone,
                        "capacity_price_eur_per_kw_year": None
                        if d.capacity_price_eur_per_kw_year is None
                        else float(d.capacity_price_eur_per_kw_year),
                    }
                    for d in devices
                ]
            }
        )


def parse_moment(name: str, text: str, tz: ZoneInfo) -> datetime:
    """An ISO datetime with offset, or a date meaning local midnight."""
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time(), tzinfo=tz)
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise exceptions.ValidationError(
            {name: ["Use YYYY-MM-DD or an ISO 8601 datetime with an offset."]}
        ) from None
    if moment.tzinfo is None:
        raise exceptions.ValidationError({name: ["A datetime needs a UTC offset."]})
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise exceptions.ValidationError({name: [f"Use a year from {FIRST_YEAR} to {LAST_YEAR}."]})
    return moment


class SeriesViewSet(viewsets.ViewSet):
    """Buckets of import/export energy and power statistics over a range."""

    permission_classes = [CanRead]

    @extend_schema(
        operation_id="series",
        summary="Energy and power per bucket over a range",
        description=(
            "Import/export kWh from register deltas, average/min/max power and the sample "
            "count per bucket. Buckets without samples are left out."
        ),
        parameters=SERIES_PARAMS,
        responses={200: SERIES, **problems(*READ_ERRORS)},
    )
    def list(self, request):
        device = readable_device(request, request.query_params.get("device_id"))
        tz = ZoneInfo(device.timezone)
        interval = request.query_params.get("interval", "1h")
        if interval not in INTERVALS:
            raise exceptions.ValidationError({"interval": [f"Use one of {', '.join(INTERVALS)}."]})
        end_text = request.query_params.get("end")
        end = parse_moment("end", end_text, tz) if end_text else timezone.now()
        start_text = request.query_params.get("start")
        start = (
            parse_moment("start", start_text, tz) if start_text else end - DEFAULT_SPAN[interval]
        )
        if start >= end:
            raise exceptions.ValidationError({"start": ["Must be before end."]})
        try:
            buckets = series(device.pk, interval, start, end, tz)
        except SeriesRangeError as exc:
            raise exceptions.ValidationError({"start": [str(exc)]}) from None
        return Response(
            {
                "device_id": device.device_id,
                "interval": interval,
                "timezone": device.timezone,
                "start": start.astimezone(tz).isoformat(),
                "end": end.astimezone(tz).isoformat(),
                "buckets": buckets,
            }
        )
