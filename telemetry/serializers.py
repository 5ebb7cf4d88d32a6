"""The telemetry API's answers and query parameters, each declared once.

The same serializers render the answers and give drf-spectacular their schema (and the
query serializers parse and document the parameters), so the documentation cannot
drift from what is sent. Answer serializers render typed results: moments as ISO 8601
in the device's zone (``LocalDateTimeField``, the zone taken from the answer's
``timezone``), figures as the selector rounded them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Manager
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

import p1wire as wire
from p1common.openapi import DATETIME
from telemetry.openapi import sample_field_schema
from telemetry.series import INTERVALS, MAX_POINTS
from telemetry.timegrid import FIRST_YEAR, LAST_YEAR


def schema_field(
    base: type[serializers.Field], schema: dict[str, Any], **kwargs: Any
) -> serializers.Field:
    """A ``base`` field documented by an explicit JSON schema (e.g. one generated from
    the wire format)."""
    declared = extend_schema_field(schema)(type(f"Declared{base.__name__}", (base,), {}))
    return declared(**kwargs)


class Number(serializers.FloatField):
    """A figure as the selector computed it (already rounded): sent as is."""

    def to_representation(self, value: float) -> float:  # type: ignore[override]  # the stubs say FloatField renders str; DRF's returns float(value)
        return value


class LocalDateTimeField(serializers.DateTimeField):
    """A moment in the zone of the device the answer is about (context["tz"])."""

    def to_representation(self, value: datetime | str) -> str:
        if isinstance(value, str):  # telemetry.series gives local ISO text already
            return value
        return value.astimezone(self.context["tz"]).isoformat()


class TextField(serializers.CharField):
    """Text or a value whose str() is its API form (a capacity.rules.Month)."""

    def to_representation(self, value: object) -> str:
        return str(value)


# Fields whose rendering of a selector's value is the value itself.
_AS_IS = (Number, serializers.IntegerField, serializers.BooleanField, serializers.ChoiceField)


class PlainListSerializer(serializers.ListSerializer):
    """Many items, rendered by the child's declared fields without a DRF call per item.

    A DRF serializer costs tens of microseconds per item; a series has up to
    telemetry.series.MAX_POINTS buckets. The fields are read once: figures go out as the
    selector made them, moments and months through their field's conversion. Items are
    dataclasses or dicts, all alike (a column is converted, or not, as its first item
    says); dicts that already are the declared JSON (telemetry.series' buckets) go out
    as they are.
    """

    def to_representation(self, data: Manager[Any] | Iterable[Any]) -> list[dict[str, Any]]:
        # A manager is read as DRF's ListSerializer reads it (answers pass lists).
        items = list(data.all() if isinstance(data, Manager) else data)
        if not items:
            return []
        child = self.child
        # Meta.list_serializer_class of AnswerSerializer: the child is always a Serializer.
        if not isinstance(child, serializers.Serializer):
            raise TypeError(f"PlainListSerializer renders a Serializer's items, not {child!r}")
        # A bound field's field_name is its key here (BindingDict binds it so).
        fields = list(child.fields.items())
        names = [name for name, _ in fields]
        first = items[0]
        as_dicts = isinstance(first, dict)
        convert: list[tuple[str, Callable[[Any], Any]]] = [
            (name, field.to_representation)
            for name, field in fields
            if _converts(field, first[name] if as_dicts else getattr(first, name))
        ]
        if as_dicts and not convert and list(first) == names:
            return items
        rows = []
        for item in items:
            if as_dicts:
                row = {name: item[name] for name in names}
            else:
                row = {name: getattr(item, name) for name in names}
            for name, to_json in convert:
                value = row[name]
                if value is not None:
                    row[name] = to_json(value)
            rows.append(row)
        return rows


def _converts(field: serializers.Field, value: Any) -> bool:
    """Whether a selector's value needs the field's conversion to become its JSON."""
    if isinstance(field, _AS_IS) or type(field) is serializers.CharField:
        return False
    return not (isinstance(field, LocalDateTimeField) and isinstance(value, str))


# The base of answer serializers: a typed result rendered with moments in the zone its
# ``timezone`` names. (A comment, not a docstring: drf-spectacular would describe every
# answer with it.)
class AnswerSerializer(serializers.Serializer):
    class Meta:
        list_serializer_class = PlainListSerializer

    def __init__(self, instance: object = None, **kwargs: Any) -> None:
        super().__init__(instance, **kwargs)
        zone = (
            instance.get("timezone")
            if isinstance(instance, dict)
            else getattr(instance, "timezone", None)
        )
        if zone is not None and "tz" not in self.context:
            self._context = {**self._context, "tz": ZoneInfo(zone)}


def sample_field(name: str) -> serializers.Field:
    """The field rendering a stored sample's value, documented as the wire field."""
    base = LocalDateTimeField if wire.SAMPLE_FIELDS[name] == wire.TIMESTAMP else Number
    return schema_field(
        base, sample_field_schema(name), allow_null=name not in wire.REQUIRED_FIELDS
    )


# --- answers -------------------------------------------------------------------------


class IngestResultSerializer(serializers.Serializer):
    received = serializers.IntegerField()
    inserted = serializers.IntegerField(help_text="Samples new to the server.")
    duplicates = serializers.IntegerField(help_text="Samples it already had (retries).")


class DeviceSerializer(serializers.Serializer):
    device_id = serializers.CharField()
    name = serializers.CharField()
    timezone = serializers.CharField(help_text="IANA zone, e.g. Europe/Brussels.")
    capacity_price_eur_per_kw_year = serializers.FloatField(allow_null=True)


class DeviceListSerializer(serializers.Serializer):
    devices = DeviceSerializer(many=True)


class BucketSerializer(AnswerSerializer):
    start = LocalDateTimeField()
    import_kwh = Number(
        help_text=(
            "Import register rise inside register segments: a meter swap (capacity "
            "register-breaks) adds nothing."
        )
    )
    export_kwh = Number(
        allow_null=True,
        help_text="Likewise for export; null where the meter has no export registers.",
    )
    avg_power_w = Number()
    min_power_w = Number()
    max_power_w = Number()
    sample_count = serializers.IntegerField()


def choice_field(choices: Sequence[str], **kwargs: Any) -> serializers.Field:
    """A ChoiceField documented as a plain enum (no generated enum component)."""
    return schema_field(
        serializers.ChoiceField,
        {"type": "string", "enum": list(choices)},
        choices=choices,
        **kwargs,
    )


class SeriesSerializer(AnswerSerializer):
    device_id = serializers.CharField()
    interval = choice_field(INTERVALS)
    timezone = serializers.CharField()
    start = LocalDateTimeField()
    end = LocalDateTimeField()
    buckets = BucketSerializer(many=True, help_text="Only buckets that have samples.")


# --- query parameters ----------------------------------------------------------------

MOMENT_TEXT = "YYYY-MM-DD (local midnight) or ISO 8601 with an offset; 2000 to 2099."
_DATE_PATTERN = r"^20\d{2}-\d{2}-\d{2}$"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$").match  # the shape; the year is checked after
_DATETIME = re.compile(wire.TIMESTAMP_PATTERN).match
MOMENT = {
    "anyOf": [
        {"type": "string", "format": "date", "pattern": _DATE_PATTERN},
        {**DATETIME, "pattern": wire.TIMESTAMP_PATTERN},
    ],
    "description": MOMENT_TEXT,
}


def parse_moment(text: str, tz: ZoneInfo) -> datetime:
    """An ISO datetime with offset, or a date meaning local midnight."""
    try:
        if len(text) == 10:
            if not _DATE(text):
                raise ValueError(text)  # fromisoformat also takes week dates (2026-W01-1)
            moment = datetime.combine(date.fromisoformat(text), time(), tzinfo=tz)
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise serializers.ValidationError(
            "Use YYYY-MM-DD or an ISO 8601 datetime with an offset."
        ) from None
    if moment.tzinfo is None:
        raise serializers.ValidationError("A datetime needs a UTC offset.")
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise serializers.ValidationError(f"Use a year from {FIRST_YEAR} to {LAST_YEAR}.")
    if len(text) != 10 and not _DATETIME(text):
        raise serializers.ValidationError(
            "Use RFC 3339: YYYY-MM-DDThh:mm:ss with Z or an offset such as +01:00."
        )
    # In UTC: ISO 8601 allows offsets (up to 23:59, fractions of a second) that
    # PostgreSQL refuses; the instant is what the query needs.
    return moment.astimezone(UTC)


@extend_schema_field(MOMENT)
class BlankIsAbsent(serializers.Field):
    """An optional parameter sent empty (``?end=``, as URL templates do) means the
    default, as when it is left out; the schema says allowEmptyValue (p1common.openapi)."""

    blank_is_absent = True

    def validate_empty_values(self, data: object) -> tuple[bool, object]:
        if data == "" and not self.required:
            data = serializers.empty
        return super().validate_empty_values(data)


class MomentField(BlankIsAbsent):
    """A moment parameter; a bare date is local midnight in the device's zone."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs["help_text"] = f"{MOMENT_TEXT} {kwargs.get('help_text', '')}".strip()
        super().__init__(**kwargs)

    def to_internal_value(self, data: object) -> datetime:
        return parse_moment(str(data), self.context["tz"])


class WholeNumberField(serializers.IntegerField):
    """Digits only: no sign, decimals or spaces, as the parameter always took."""

    def to_internal_value(self, data: float | int | str) -> int:
        if not re.fullmatch(r"[0-9]+", str(data)):
            self.fail("invalid")
        return super().to_internal_value(data)


class QuerySerializer(serializers.Serializer):
    """Parameters of a read; context["tz"]: the zone of the device being read."""

    def validate_order(self, values: dict) -> dict:
        start, end = values.get("start"), values.get("end")
        if start is not None and end is not None and start >= end:
            raise serializers.ValidationError({"start": ["Must be before end."]})
        return values


DEFAULT_SPAN = {
    "15m": timedelta(days=1),
    "1h": timedelta(days=2),
    "1d": timedelta(days=31),
    "1w": timedelta(weeks=13),
    "1mo": timedelta(days=366),
}


class SeriesQuery(QuerySerializer):
    interval = choice_field(
        INTERVALS,
        default="1h",
        help_text=(
            "Bucket size; days, weeks (Monday) and months start at local midnight. "
            f"The range from start to end may hold at most {MAX_POINTS} buckets."
        ),
        error_messages={"invalid_choice": f"Use one of {', '.join(INTERVALS)}."},
    )
    start = MomentField(
        required=False,
        help_text="Default: end minus a span per interval. Must be before end.",
    )
    end = MomentField(
        required=False,
        help_text="Default: now, or start plus the interval's span for a start not before now.",
    )

    def validate(self, values: dict) -> dict:
        span = DEFAULT_SPAN[values["interval"]]
        if "end" not in values:
            now = timezone.now()
            start = values.get("start")
            # A start in the future with the default end is an empty range, not an error.
            values["end"] = now if start is None or start < now else start + span
        values.setdefault("start", values["end"] - span)
        return self.validate_order(values)
