"""GET /v1/export: a device's samples, quarters or months as streaming CSV."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request

from integrations import export
from integrations.serializers import ExportQuery
from p1common.openapi import READ_ERRORS, problems
from telemetry.access import ReadViewSet
from telemetry.openapi import DEVICE_ID_PARAM

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"


class CsvRenderer(BaseRenderer):
    """Lets a client ask for text/csv (Accept); the answer itself is streamed."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self,
        data: object,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        return b""


class ExportViewSet(ReadViewSet):
    """CSV for spreadsheets and scripts, with the same access rules as every read."""

    renderer_classes = [CsvRenderer, JSONRenderer]

    @extend_schema(
        operation_id="export",
        summary="Samples, quarters or months as CSV",
        description=(
            "Streams CSV, a header line first. Moments are local ISO 8601 with the "
            "device's UTC offset; energy in kWh, power in W (samples) or kW (quarters, "
            "months); flags are true/false; an absent value is an empty cell. Quarters "
            "and months carry the figures of /v1/capacity/quarters, /v1/capacity/months, "
            "/v1/capacity/month/{month} and /v1/series?interval=1mo."
        ),
        parameters=[DEVICE_ID_PARAM, ExportQuery],
        responses={
            (200, "text/csv"): OpenApiResponse(
                response=OpenApiTypes.STR, description="CSV, streamed."
            ),
            **problems(*READ_ERRORS),
        },
    )
    def list(self, request: Request) -> StreamingHttpResponse:
        device, query = self.read(request, ExportQuery)
        kind, start, end = query["kind"], query["start"], query["end"]
        if kind == "samples" and export.holds_too_many_samples(device, start, end):
            limit = f"{export.MAX_SAMPLE_ROWS:,}"
            raise exceptions.ValidationError(
                {
                    "start": [
                        f"the range holds more than {limit} samples, the most one samples "
                        "export holds; ask for a shorter range (a day at a time)"
                    ]
                }
            )
        response = StreamingHttpResponse(
            export.csv_lines(kind, device, start, end), content_type=CSV_CONTENT_TYPE
        )
        name = export.file_name(kind, device, start, end)
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Cache-Control"] = "no-store"
        return response
