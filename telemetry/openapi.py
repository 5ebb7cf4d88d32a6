"""OpenAPI components of the telemetry endpoints.

The sample schema is generated from p1wire.SAMPLE_FIELDS, the one definition
of the wire format, so a field added there is documented without another edit.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter

import p1wire as wire
from p1common.openapi import (
    DATETIME,
    INTEGER,
    NUMBER,
    STRING,
    component,
    nullable,
    obj,
)
from telemetry import validation
from telemetry.series import INTERVALS

_KIND_SCHEMAS = {
    wire.TIMESTAMP: {
        **DATETIME,
        "maxLength": 40,
        "description": "ISO 8601 with a UTC offset; from 2000 on.",
    },
    wire.POWER: {**NUMBER, "description": "Watts; negative when exporting."},
    wire.REGISTER: {**NUMBER, "minimum": 0},
    wire.MEASURE: NUMBER,
    wire.TARIFF: {**INTEGER, "minimum": wire.TARIFF_RANGE.start, "maximum": wire.TARIFF_RANGE[-1]},
}


def sample_field_schema(name: str) -> dict:
    """A wire field's schema; optional fields may be sent as null."""
    schema = _KIND_SCHEMAS[wire.SAMPLE_FIELDS[name]]
    return schema if name in wire.REQUIRED_FIELDS else nullable(schema)


_future_minutes = int(validation.MAX_FUTURE.total_seconds() // 60)
SAMPLE = component(
    "Sample",
    obj(
        {name: sample_field_schema(name) for name in wire.REQUIRED_FIELDS},
        {name: sample_field_schema(name) for name in wire.OPTIONAL_FIELDS},
        additionalProperties=False,
        description=(
            "One meter reading. (device, ts) is its key: a sample sent again is a "
            f"duplicate, not an error. ts may be at most {_future_minutes} minutes ahead "
            "of the server's clock."
        ),
    ),
)
INGEST_BATCH = component(
    "IngestBatch",
    obj(
        {
            "samples": {
                "type": "array",
                "items": SAMPLE,
                "minItems": 1,
                "maxItems": settings.INGEST_MAX_BATCH,
            }
        },
        {"device_id": {**STRING, "description": "If given, must be the token's own device."}},
        additionalProperties=False,
        description="All or nothing: one invalid sample and nothing of the batch is written.",
    ),
)
INGEST_RESULT = component(
    "IngestResult",
    obj(
        {
            "received": INTEGER,
            "inserted": {**INTEGER, "description": "Samples new to the server."},
            "duplicates": {**INTEGER, "description": "Samples it already had (retries)."},
        }
    ),
)
DEVICE_LIST = component(
    "DeviceList",
    obj(
        {
            "devices": {
                "type": "array",
                "items": obj(
                    {
                        "device_id": STRING,
                        "name": STRING,
                        "timezone": {**STRING, "description": "IANA zone, e.g. Europe/Brussels."},
                        "capacity_price_eur_per_kw_year": nullable(NUMBER),
                    }
                ),
            }
        }
    ),
)
SERIES = component(
    "Series",
    obj(
        {
            "device_id": STRING,
            "interval": {**STRING, "enum": list(INTERVALS)},
            "timezone": STRING,
            "start": DATETIME,
            "end": DATETIME,
            "buckets": {
                "type": "array",
                "description": "Only buckets that have samples.",
                "items": obj(
                    {
                        "start": DATETIME,
                        "import_kwh": {
                            **NUMBER,
                            "description": (
                                "Import register rise inside register segments: a meter "
                                "swap (capacity register-breaks) adds nothing."
                            ),
                        },
                        "export_kwh": nullable(
                            {
                                **NUMBER,
                                "description": (
                                    "Likewise for export; null where the meter has no "
                                    "export registers."
                                ),
                            }
                        ),
                        "avg_power_w": NUMBER,
                        "min_power_w": NUMBER,
                        "max_power_w": NUMBER,
                        "sample_count": INTEGER,
                    }
                ),
            },
        }
    ),
)

DEVICE_ID_PARAM = OpenApiParameter(
    "device_id",
    OpenApiTypes.STR,
    examples=[OpenApiExample("a device", value="home-p1")],
    description=(
        "The device to read. A device token may leave it out (its own device); a "
        "logged-in user must give it. Another household's device answers 404."
    ),
)
MOMENT = {
    "anyOf": [{"type": "string", "format": "date"}, DATETIME],
    "description": "YYYY-MM-DD (local midnight) or ISO 8601 with an offset; 2000 to 2099.",
}
SERIES_PARAMS = [
    DEVICE_ID_PARAM,
    OpenApiParameter(
        "interval",
        {**STRING, "enum": list(INTERVALS), "default": "1h"},
        description="Bucket size; days, weeks (Monday) and months start at local midnight.",
    ),
    OpenApiParameter("start", MOMENT, description="Default: end minus a span per interval."),
    OpenApiParameter("end", MOMENT, description="Default: now."),
]
