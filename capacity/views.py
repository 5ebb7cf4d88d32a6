"""Capacity tariff and realtime endpoints. Thin: parse, check access, call reports."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from capacity import reports
from capacity.meter_history import (
    MeterHistoryResultSerializer,
    MeterHistorySerializer,
    flat_errors,
    store_meter_history,
)
from capacity.realtime import cached_realtime, realtime_cache_key, with_age
from capacity.reconciliation import reconcile
from capacity.rules import Month
from capacity.serializers import (
    MONTH_PATH_PARAM,
    DayQuartersSerializer,
    MonthPath,
    MonthReportSerializer,
    MonthsQuery,
    MonthTableSerializer,
    QuartersQuery,
    RealtimeSerializer,
    ReconciliationSerializer,
    RegisterBreaksQuery,
    RegisterBreaksSerializer,
)
from p1common.openapi import READ_ERRORS, problems
from p1common.replica import replica_reads
from telemetry.access import ReadViewSet
from telemetry.auth import HasIngestScope
from telemetry.models import Device, DeviceToken
from telemetry.openapi import DEVICE_ID_PARAM
from telemetry.renderers import AnswerJSONRenderer
from telemetry.views import decode_batch


class RealtimeViewSet(ReadViewSet):
    """Latest reading, the running quarter against this month's peak, and headroom."""

    renderer_classes = [AnswerJSONRenderer, BrowsableAPIRenderer]

    @staticmethod
    def prefetch_cache_keys(device: Device) -> list[str]:
        """Read with the token check: a cached answer costs one Redis round trip."""
        return [realtime_cache_key(device.device_id)]

    @extend_schema(
        operation_id="realtime",
        summary="Latest reading, the running quarter and the month's peak",
        parameters=[DEVICE_ID_PARAM],
        responses={200: RealtimeSerializer, **problems(*READ_ERRORS)},
    )
    def list(self, request: Request) -> Response:
        device, _ = self.read(request)
        # On the primary: a computed answer is cached until the next batch drops it, so
        # one computed on a replica that has not yet replayed that batch would stay
        # stale for CACHE_TTL_S, not for the replica's lag; and the cache already makes
        # this one computation per batch (docs/SCALING.md).
        answer = cached_realtime(device, getattr(request, "prefetched_cache", None))
        return Response(with_age(answer))


class CapacityViewSet(ReadViewSet):
    """Monthly peaks, the 12-month average and every quarter of a day."""

    @extend_schema(
        operation_id="capacity_month",
        summary="A month's peak, billed peak and 12-month average",
        parameters=[MONTH_PATH_PARAM, DEVICE_ID_PARAM],
        responses={200: MonthReportSerializer, **problems(*READ_ERRORS)},
    )
    @action(detail=False, url_path=r"month/(?P<month>[^/]+)")
    def month(self, request: Request, month: str) -> Response:
        device, query = self.read(request, MonthPath, month=month)
        with replica_reads():
            report = reports.month_report(device, query["month"])
        return Response(MonthReportSerializer(report).data)

    @extend_schema(
        operation_id="capacity_months",
        summary="Peaks of several months, newest first",
        parameters=[DEVICE_ID_PARAM, MonthsQuery],
        responses={200: MonthTableSerializer, **problems(*READ_ERRORS)},
    )
    @action(detail=False)
    def months(self, request: Request) -> Response:
        """Peaks of the last ``count`` months (default 13) up to ``end`` (default: now)."""
        device, query = self.read(request, MonthsQuery)
        last = query.get("end") or Month.of(timezone.now(), ZoneInfo(device.timezone))
        with replica_reads():
            table = reports.month_table(device, last, query["count"])
        return Response(MonthTableSerializer(table).data)

    @extend_schema(
        operation_id="capacity_reconciliation",
        summary="Our quarters against the grid operator's imported ones, per month",
        description=(
            "Per month, newest first: our peak and the operator's (from an imported Mijn "
            "Fluvius export, manage.py import_fluvius), the largest difference of a quarter "
            "both have, and the quarters one side lacks."
        ),
        parameters=[DEVICE_ID_PARAM, MonthsQuery],
        responses={200: ReconciliationSerializer, **problems(*READ_ERRORS)},
    )
    @action(detail=False)
    def reconciliation(self, request: Request) -> Response:
        device, query = self.read(request, MonthsQuery)
        last = query.get("end") or Month.of(timezone.now(), ZoneInfo(device.timezone))
        with replica_reads():
            found = reconcile(device, last, query["count"])
        return Response(ReconciliationSerializer(found).data)

    @extend_schema(
        operation_id="capacity_quarters",
        summary="Every quarter of a local day",
        parameters=[DEVICE_ID_PARAM, QuartersQuery],
        responses={200: DayQuartersSerializer, **problems(*READ_ERRORS)},
    )
    @action(detail=False)
    def quarters(self, request: Request) -> Response:
        device, query = self.read(request, QuartersQuery)
        with replica_reads():
            day = reports.day_quarters(device, query["date"])
        return Response(DayQuartersSerializer(day).data)

    @extend_schema(
        operation_id="capacity_register_breaks",
        summary="Register discontinuities (meter swaps)",
        description=(
            "Where a register went down or jumped beyond what a household connection "
            "carries: a new register segment starts. Quarters, peaks and series count "
            "energy only inside segments."
        ),
        parameters=[DEVICE_ID_PARAM, RegisterBreaksQuery],
        responses={200: RegisterBreaksSerializer, **problems(*READ_ERRORS)},
    )
    @action(detail=False, url_path="register-breaks")
    def register_breaks(self, request: Request) -> Response:
        device, query = self.read(request, RegisterBreaksQuery)
        with replica_reads():
            found = reports.register_breaks(device, query.get("start"), query.get("end"))
        return Response(RegisterBreaksSerializer(found).data)


class MeterHistoryViewSet(viewsets.ViewSet):
    """POST the meter's own monthly maxima read from its telegram; a repeat changes nothing."""

    permission_classes = [HasIngestScope]

    @extend_schema(
        operation_id="meter_history",
        summary="Store the meter's 13-month history of monthly maxima",
        description=(
            "What the edge read from the meter's telegram: the closed months of "
            "0-0:98.1.0 and the running month's 1-0:1.6.0. Kept per device and month; "
            "a month's provenance is then meter-reported (see /v1/capacity/month)."
        ),
        request=MeterHistorySerializer,
        auth=[{"deviceToken": []}],  # type: ignore[list-item]  # see telemetry.views
        responses={200: MeterHistoryResultSerializer, **problems(400, 401, 403, 415, 429, 503)},
    )
    def create(self, request: Request) -> Response:
        token = request.auth
        if not isinstance(token, DeviceToken):  # cannot happen: HasIngestScope let it in
            raise exceptions.NotAuthenticated()
        body = MeterHistorySerializer(data=decode_batch(request))
        if not body.is_valid():
            raise serializers.ValidationError(flat_errors(body.errors))
        device_id = body.validated_data.get("device_id")
        if device_id is not None and device_id != token.device.device_id:
            raise exceptions.PermissionDenied("device_id names another device than the token's.")
        result = store_meter_history(token.device, body.validated_data)
        return Response(MeterHistoryResultSerializer(result).data)
