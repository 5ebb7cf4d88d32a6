"""The meter's own monthly maxima, as the edge reads them from the telegram
(edgeclient.telegram; the body is p1wire.meter_history_payload).

Stored per (device, month), so a retried or repeated body changes nothing. A closed
month (0-0:98.1.0) takes the meter's figure as read; the running month's 1-0:1.6.0 only
replaces an earlier read of the same month, and never a closed figure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import transaction
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

import p1wire as wire
from capacity.models import MeterMonthPeak
from capacity.rules import Month
from capacity.serializers import MONTH_PARAM
from telemetry.models import DEVICE_ID_VALIDATOR, Device
from telemetry.openapi import sample_field_schema
from telemetry.validation import InvalidValue, wire_timestamp

# Far above any household connection (3 x 63 A is about 43 kW): a misread, not a peak.
MAX_PEAK_KW = 1000.0


@extend_schema_field(MONTH_PARAM)
class MonthField(serializers.Field):
    """YYYY-MM, 2000 to 2099, as capacity.rules.Month."""

    def to_internal_value(self, data: object) -> Month:
        try:
            return Month.parse(str(data))
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


@extend_schema_field(sample_field_schema("ts"))
class WireMomentField(serializers.Field):
    """A timestamp as the wire format states and checks it (p1wire.TIMESTAMP)."""

    def to_internal_value(self, data: object) -> datetime:
        try:
            return wire_timestamp(data)
        except InvalidValue as exc:
            raise serializers.ValidationError(f"{exc}") from None


class MeterMonthSerializer(serializers.Serializer):
    month = MonthField(help_text="YYYY-MM, the calendar month in Belgian time.")
    peak_kw = serializers.FloatField(min_value=0, max_value=MAX_PEAK_KW)
    peak_ts = WireMomentField(allow_null=True, help_text="When its quarter ended.")


@extend_schema_field(
    {"type": "string", "pattern": re.compile(DEVICE_ID_VALIDATOR.regex).pattern, "maxLength": 64}
)
class DeviceIdField(serializers.CharField):
    """A device_id as telemetry.models.Device takes it (here only compared)."""


class MeterHistorySerializer(serializers.Serializer):
    """One telegram read: the meter's closed months and its running month."""

    device_id = DeviceIdField(required=False, help_text="Must be the token's device.")
    read_at = WireMomentField(help_text="When the edge read the telegram.")
    months = serializers.ListField(
        child=MeterMonthSerializer(),
        max_length=wire.METER_HISTORY_MAX_MONTHS,
        help_text="0-0:98.1.0, the meter's closed months.",
    )
    current = MeterMonthSerializer(allow_null=True, required=False, help_text="1-0:1.6.0.")


class MeterHistoryResultSerializer(serializers.Serializer):
    received = serializers.IntegerField(help_text="Months in the body.")
    changed = serializers.IntegerField(help_text="Months stored or updated; 0 for a repeat.")


def flat_errors(errors: Any, path: str = "") -> dict[str, list[str]]:
    """Nested serializer errors as the problem's ``errors`` object: one list of
    messages per field path (``current.month``, ``months.0.peak_kw``)."""
    if isinstance(errors, dict):
        found: dict[str, list[str]] = {}
        for key, value in errors.items():
            found.update(flat_errors(value, f"{path}.{key}" if path else str(key)))
        return found
    if isinstance(errors, list) and all(isinstance(e, str) for e in errors):
        return {path or "non_field_errors": [str(e) for e in errors]}
    if isinstance(errors, list):
        found = {}
        for index, value in enumerate(errors):
            found.update(flat_errors(value, f"{path}.{index}" if path else str(index)))
        return found
    return {path or "non_field_errors": [str(errors)]}


@dataclass(frozen=True)
class MeterHistoryResult:
    received: int
    changed: int


def store_meter_history(device: Device, body: dict[str, Any]) -> MeterHistoryResult:
    """Upsert the validated body (MeterHistorySerializer.validated_data)."""
    read_at: datetime = body["read_at"]
    entries = [(m, True) for m in body["months"]]
    if body.get("current"):
        entries.append((body["current"], False))
    changed = 0
    with transaction.atomic():
        stored = {
            row.month: row
            for row in MeterMonthPeak.objects.select_for_update().filter(
                device=device,
                month__in=[_first_day(entry["month"]) for entry, _ in entries],
            )
        }
        for entry, closed in entries:
            day = _first_day(entry["month"])
            row = stored.get(day)
            figures = {"peak_kw": entry["peak_kw"], "peak_ts": entry["peak_ts"]}
            if row is None:
                stored[day] = MeterMonthPeak.objects.create(
                    device=device, month=day, closed=closed, read_at=read_at, **figures
                )
                changed += 1
                continue
            if row.closed and not closed:
                continue  # a running figure never replaces the meter's closed one
            if not closed and read_at <= row.read_at:
                continue  # an older read of the running month
            if (row.peak_kw, row.peak_ts, row.closed) == (*figures.values(), closed):
                continue
            row.peak_kw, row.peak_ts, row.closed, row.read_at = (
                entry["peak_kw"],
                entry["peak_ts"],
                closed,
                read_at,
            )
            row.save(update_fields=["peak_kw", "peak_ts", "closed", "read_at"])
            changed += 1
    return MeterHistoryResult(len(entries), changed)


def _first_day(month: Month) -> date:
    return date(month.year, month.month, 1)
