"""Capacity tariff and realtime endpoints. Thin: parse, check access, call reports."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from capacity import reports, rules
from capacity.openapi import (
    BREAKS_PARAMS,
    DATE_PARAM,
    DAY_QUARTERS,
    MONTH_PATH_PARAM,
    MONTH_REPORT,
    MONTH_TABLE,
    MONTHS_PARAMS,
    REALTIME,
    REGISTER_BREAKS,
)
from capacity.realtime import cached_realtime, realtime_cache_key, with_age
from capacity.rules import Month
from p1common.openapi import READ_ERRORS, problems
from telemetry.access import CanRead, readable_device
from telemetry.openapi import DEVICE_ID_PARAM
from telemetry.read_views import parse_moment


class RealtimeViewSet(viewsets.ViewSet):
    """Latest reading, the running quarter against this month's peak, and headroom."""

    permission_classes = [CanRead]

    @staticmethod
    def prefetch_cache_keys(device) -> list[str]:
        """Read with the token check: a cached answer costs one Redis round trip."""
        return [realtime_cache_key(device.device_id)]

    @extend_schema(
        operation_id="realtime",
        summary="Latest reading, the running quarter and the month's peak",
        parameters=[DEVICE_ID_PARAM],
        responses={200: REALTIME, **problems(*READ_ERRORS)},
    )
    def list(self, request):
        device = readable_device(request, request.query_params.get("device_id"))
        answer = cached_realtime(device, getattr(request, "prefetched_cache", None))
        return Response(with_age(answer))


class CapacityViewSet(viewsets.ViewSet):
    """Monthly peaks, the 12-month average and every quarter of a day."""

    permission_classes = [CanRead]

    @extend_schema(
        operation_id="capacity_month",
        summary="A month's peak, billed peak and 12-month average",
        parameters=[MONTH_PATH_PARAM, DEVICE_ID_PARAM],
        responses={200: MONTH_REPORT, **problems(*READ_ERRORS)},
    )
    @action(detail=False, url_path=r"month/(?P<month>[^/]+)")
    def month(self, request, month: str):
        device = readable_device(request, request.query_params.get("device_id"))
        try:
            parsed = Month.parse(month)
        except ValueError as exc:
            raise exceptions.ValidationError({"month": [str(exc)]}) from None
        return Response(reports.month_report(device, parsed))

    @extend_schema(
        operation_id="capacity_months",
        summary="Peaks of several months, newest first",
        parameters=[DEVICE_ID_PARAM, *MONTHS_PARAMS],
        responses={200: MONTH_TABLE, **problems(*READ_ERRORS)},
    )
    @action(detail=False)
    def months(self, request):
        """Peaks of the last ``count`` months (default 13) up to ``end`` (default: now)."""
        device = readable_device(request, request.query_params.get("device_id"))
        end_text = request.query_params.get("end")
        try:
            last = (
                Month.parse(end_text)
                if end_text
                else Month.of(timezone.now(), ZoneInfo(device.timezone))
            )
        except ValueError as exc:
            raise exceptions.ValidationError({"end": [str(exc)]}) from None
        count_text = request.query_params.get("count", "13")
        if not count_text.isdigit() or not 1 <= int(count_text) <= reports.MONTH_TABLE_MAX:
            raise exceptions.ValidationError(
                {"count": [f"Use a whole number from 1 to {reports.MONTH_TABLE_MAX}."]}
            )
        return Response(reports.month_table(device, last, int(count_text)))

    @extend_schema(
        operation_id="capacity_quarters",
        summary="Every quarter of a local day",
        parameters=[DEVICE_ID_PARAM, DATE_PARAM],
        responses={200: DAY_QUARTERS, **problems(*READ_ERRORS)},
    )
    @action(detail=False)
    def quarters(self, request):
        device = readable_device(request, request.query_params.get("device_id"))
        text = request.query_params.get("date", "")
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise exceptions.ValidationError({"date": ["Use YYYY-MM-DD."]}) from None
        if not rules.FIRST_YEAR <= day.year <= rules.LAST_YEAR:
            raise exceptions.ValidationError(
                {"date": [f"Use a day from {rules.FIRST_YEAR} to {rules.LAST_YEAR}."]}
            )
        return Response(reports.day_quarters(device, day))

    @extend_schema(
        operation_id="capacity_register_breaks",
        summary="Register discontinuities (meter swaps)",
        description=(
            "Where a register went down or jumped beyond what a household connection "
            "carries: a new register segment starts. Quarters, peaks and series count "
            "energy only inside segments."
        ),
        parameters=[DEVICE_ID_PARAM, *BREAKS_PARAMS],
        responses={200: REGISTER_BREAKS, **problems(*READ_ERRORS)},
    )
    @action(detail=False, url_path="register-breaks")
    def register_breaks(self, request):
        device = readable_device(request, request.query_params.get("device_id"))
        tz = ZoneInfo(device.timezone)
        bounds = {}
        for name in ("start", "end"):
            text = request.query_params.get(name)
            bounds[name] = parse_moment(name, text, tz) if text else None
        if bounds["start"] and bounds["end"] and bounds["start"] >= bounds["end"]:
            raise exceptions.ValidationError({"start": ["Must be before end."]})
        return Response(reports.register_breaks(device, bounds["start"], bounds["end"]))
