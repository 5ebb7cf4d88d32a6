"""OpenAPI pieces of the telemetry endpoints that are not serializers.

The ingest body is documented from p1wire.SAMPLE_FIELDS, the one definition of the
wire format (telemetry.validation checks it without a serializer, docs/adr/0002), and
the device_id parameter every read takes (telemetry.access.ReadViewSet parses it).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter

from p1common.openapi import component
from telemetry.serializers import ingest_batch_schema, sample_schema

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
