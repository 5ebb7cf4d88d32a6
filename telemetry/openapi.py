"""OpenAPI pieces of the telemetry endpoints that are not serializers.

The ingest body is documented from p1wire.SAMPLE_FIELDS, the one definition of the
wire format: telemetry.validation checks it without a serializer (docs/adr/0002). The
device_id parameter is the one every read takes (telemetry.access.ReadViewSet).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter

import p1wire as wire
from p1common.openapi import DATETIME, component, nullable
from telemetry import validation

# The wire format as JSON schema: the ingest body, and the realtime answer's latest
# reading (telemetry.serializers.sample_field).
_KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    wire.TIMESTAMP: {
        **DATETIME,
        "maxLength": 40,
        "pattern": wire.TIMESTAMP_PATTERN,
        "description": "ISO 8601 with a UTC offset; from 2000-01-01T00:00:00Z on.",
    },
    wire.POWER: {
        "type": "number",
        "minimum": -wire.MAX_MAGNITUDE,
        "maximum": wire.MAX_MAGNITUDE,
        "description": "Watts; negative when exporting.",
    },
    wire.REGISTER: {"type": "number", "minimum": 0, "maximum": wire.MAX_MAGNITUDE},
    wire.MEASURE: {"type": "number", "minimum": -wire.MAX_MAGNITUDE, "maximum": wire.MAX_MAGNITUDE},
    wire.TARIFF: {
        "type": "integer",
        "minimum": wire.TARIFF_RANGE.start,
        "maximum": wire.TARIFF_RANGE[-1],
    },
}


def sample_field_schema(name: str) -> dict[str, Any]:
    """A wire field's schema; optional fields may be sent as null."""
    schema = _KIND_SCHEMAS[wire.SAMPLE_FIELDS[name]]
    return schema if name in wire.REQUIRED_FIELDS else nullable(schema)


def sample_schema() -> dict:
    future_minutes = int(validation.MAX_FUTURE.total_seconds() // 60)
    months = settings.RAW_SAMPLE_RETENTION_MONTHS
    kept = (
        f" This server keeps raw samples {months} months: ts may be at most that old "
        "(the start of the hour that many calendar months ago, UTC)."
        if months
        else ""
    )
    return {
        "type": "object",
        "properties": {
            name: sample_field_schema(name)
            for name in (*wire.REQUIRED_FIELDS, *wire.OPTIONAL_FIELDS)
        },
        "required": list(wire.REQUIRED_FIELDS),
        "additionalProperties": False,
        "description": (
            "One meter reading. (device, ts) is its key: a sample sent again is a "
            f"duplicate, not an error. ts may be at most {future_minutes} minutes ahead "
            "of the server's clock." + kept
        ),
    }


def ingest_batch_schema(sample_ref: dict) -> dict:
    return {
        "type": "object",
        "properties": {
            "samples": {
                "type": "array",
                "items": sample_ref,
                "minItems": 1,
                "maxItems": settings.INGEST_MAX_BATCH,
            },
            "device_id": {
                "type": "string",
                "description": "If given, must be the token's own device.",
            },
        },
        "required": ["samples"],
        "additionalProperties": False,
        "description": "All or nothing: one invalid sample and nothing of the batch is written.",
    }


SAMPLE = component("Sample", sample_schema())
INGEST_BATCH = component("IngestBatch", ingest_batch_schema(SAMPLE))

DEVICE_ID_PARAM = OpenApiParameter(
    "device_id",
    OpenApiTypes.STR,
    examples=[OpenApiExample("a device", value="home-p1")],
    description=(
        "The device to read. A device token may leave it out (its own device); a "
        "logged-in user must give it. Another household's device answers 404."
    ),
)


def device_links(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """Postprocessing hook: the device list's answer links to every read of a listed
    device (OpenAPI links), which is how a client, or a stateful fuzzer, goes on."""
    paths = result.get("paths", {})
    reads = [
        operation["operationId"]
        for operations in paths.values()
        for method, operation in operations.items()
        if method == "get"
        and any(p.get("name") == "device_id" for p in operation.get("parameters", []))
    ]
    listing = paths.get("/v1/devices", {}).get("get", {}).get("responses", {}).get("200")
    if listing is not None:
        listing["links"] = {
            read: {
                "operationId": read,
                "parameters": {"device_id": "$response.body#/devices/0/device_id"},
                "description": f"{read} for the first device listed.",
            }
            for read in sorted(reads)
        }
    return result
