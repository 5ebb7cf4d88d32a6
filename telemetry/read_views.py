"""Read endpoints of the telemetry app: the caller's devices and history series."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import orjson
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from p1common.openapi import READ_ERRORS, problems
from p1common.replica import replica_configured, replica_reads
from telemetry import series_blocks
from telemetry.access import ReadViewSet, visible_devices
from telemetry.openapi import DEVICE_ID_PARAM
from telemetry.renderers import AnswerJSONRenderer
from telemetry.serializers import DeviceListSerializer, SeriesQuery, SeriesSerializer
from telemetry.series import (
    Dependence,
    SeriesRangeError,
    outer_bounds,
)
from telemetry.series_cache import answer_key, cached_series


class DeviceViewSet(ReadViewSet):
    """The devices the caller may read."""

    @extend_schema(
        operation_id="devices",
        summary="The devices the caller may read",
        description="A token: its own device. A user: the devices they own; staff: all.",
        responses={200: DeviceListSerializer, **problems(401, 403, 429, 503)},
    )
    def list(self, request: Request) -> Response:
        # On the primary: the list is the access rule itself, and a device the admin
        # has just given a user must be there at once.
        devices = visible_devices(request).order_by("device_id")
        return Response(DeviceListSerializer({"devices": devices}).data)


class SeriesViewSet(ReadViewSet):
    """Buckets of import/export energy and power statistics over a range."""

    renderer_classes = [AnswerJSONRenderer, BrowsableAPIRenderer]

    @extend_schema(
        operation_id="series",
        summary="Energy and power per bucket over a range",
        description=(
            "Import/export kWh from register deltas, average/min/max power and the sample "
            "count per bucket. Buckets without samples are left out. Every interval is "
            "read from the 15-minute and hourly rollups, which are kept forever: a range "
            "whose raw samples were pruned (RAW_SAMPLE_RETENTION_MONTHS) answers as before."
        ),
        parameters=[DEVICE_ID_PARAM, SeriesQuery],
        responses={200: SeriesSerializer, **problems(*READ_ERRORS)},
    )
    def list(self, request: Request) -> Response:
        device, query = self.read(request, SeriesQuery)
        interval, start, end = query["interval"], query["start"], query["end"]
        zone = ZoneInfo(device.timezone)
        try:
            first, last = outer_bounds(interval, start, end, zone)
        except SeriesRangeError as exc:
            raise exceptions.ValidationError({"start": [str(exc)]}) from None

        def compute() -> tuple[bytes, Dependence]:
            with replica_reads():
                return series_blocks.answer(device.pk, interval, start, end, zone)

        if replica_configured():
            # A batch drops the answers it touches when it commits on the primary; an
            # answer computed afterwards on a replica that has not replayed the batch yet
            # would be cached without it and outlive the replica's lag by the cache TTL.
            # The replica already carries these reads: they are not cached.
            buckets = compute()[0]
        else:
            buckets = cached_series(device.pk, answer_key(device, interval, first, last), compute)
        answer = {
            "device_id": device.device_id,
            "interval": interval,
            "timezone": device.timezone,
            "start": start,
            "end": end,
            "buckets": [],
        }
        data = SeriesSerializer(answer).data
        # The buckets' JSON as cached: embedded as it is where orjson renders the answer.
        fast = isinstance(request.accepted_renderer, AnswerJSONRenderer)
        data["buckets"] = orjson.Fragment(buckets) if fast else orjson.loads(buckets)
        return Response(data)
