"""The ingest API. The view decodes and authorises; telemetry.pipeline does the rest."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from p1common.openapi import problems
from p1common.problems import PayloadTooLarge
from telemetry.auth import HasIngestScope, parsed_rate
from telemetry.models import Device, DeviceToken
from telemetry.openapi import INGEST_BATCH
from telemetry.pipeline import accept_batch
from telemetry.serializers import IngestResultSerializer
from telemetry.token_cache import Counter, increment


def decode_batch(request: Request) -> dict[str, Any]:
    """The JSON object of the request body, or a clear 4xx."""
    # Django's parsed media type, without parameters: many HTTP clients add
    # "; charset=utf-8", which is what JSON is anyway (RFC 8259). Another charset is not.
    django_request = request._request
    if django_request.content_type != "application/json":
        raise exceptions.UnsupportedMediaType(request.content_type or "none")
    # None only on an HttpRequest built by hand; a served request parsed its header.
    params = django_request.content_params or {}
    charset = params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise exceptions.UnsupportedMediaType(
            request.content_type, detail=f"JSON must be UTF-8, not {charset}."
        )
    if request.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise exceptions.UnsupportedMediaType(
            request.content_type, detail="Compressed request bodies are not accepted."
        )
    try:
        body = django_request.body
    except RequestDataTooBig:
        raise PayloadTooLarge() from None
    try:
        # orjson is strict: NaN, Infinity and invalid UTF-8 are errors, as they should be
        # for meter readings. It parses a 1000-sample batch 3x faster (docs/adr/0002).
        batch = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise exceptions.ParseError(f"Malformed JSON: {exc}") from None
    if not isinstance(batch, dict):
        raise exceptions.ParseError('The body must be a JSON object {"samples": [...]}.')
    return batch


class DeviceRateThrottle(BaseThrottle):
    """Limits per device, not per address: many homes share one NAT address.

    At most the rate's count of batches in a period that begins with the device's first
    batch in it (a counter that expires; DRF's own throttle keeps a list of times and
    costs two round trips). The counter is incremented in the token check's round trip
    (``IngestViewSet.prefetch_counters``), or by itself when the token was not cached.
    With the cache down nobody is throttled.
    """

    scope = "ingest"

    def __init__(self) -> None:
        self.period_s: int | None = None

    @classmethod
    def counter(cls, device: Device) -> Counter | None:
        limit, period_s = parsed_rate(settings.INGEST_THROTTLE_RATE)
        if not limit or not period_s:
            return None
        return (f"throttle:{cls.scope}:{device.pk}", period_s)

    def allow_request(self, request: Request, view: APIView) -> bool:
        token = request.auth
        if not isinstance(token, DeviceToken):  # None: no token (a session)
            return True
        counter = self.counter(token.device)
        if counter is None:
            return True
        key, self.period_s = counter
        counted: dict = getattr(request, "prefetched_counts", {})
        count = counted[key] if key in counted else increment(key, self.period_s)
        limit, _ = parsed_rate(settings.INGEST_THROTTLE_RATE)
        return count is None or limit is None or count <= limit

    def wait(self) -> float | None:
        # The period began with an earlier batch; a whole period is the honest upper bound.
        return self.period_s


class IngestViewSet(viewsets.ViewSet):
    """POST a batch of samples; a retried batch inserts nothing twice."""

    permission_classes = [HasIngestScope]
    throttle_classes = [DeviceRateThrottle]
    # The token's last use is written with the steps its batch owes (telemetry.pipeline),
    # not by the token check: a write per request would be a write per batch.
    records_token_use_itself = True

    @staticmethod
    def prefetch_counters(device: Device) -> list[Counter]:
        """Counted in the token check's round trip: the device's throttle."""
        counter = DeviceRateThrottle.counter(device)
        return [] if counter is None else [counter]

    @extend_schema(
        operation_id="ingest",
        summary="Store a batch of samples",
        description=(
            "All or nothing: any invalid sample answers 422 naming each bad index, and "
            "nothing is written. A sample already stored counts as a duplicate."
        ),
        request={"application/json": INGEST_BATCH},
        # A session has no ingest scope. drf-spectacular types auth as Sequence[str], but
        # its get_auth() returns it as the operation's security requirements (dicts).
        auth=[{"deviceToken": []}],  # type: ignore[list-item]  # the hint is wrong: see above
        responses={
            200: IngestResultSerializer,
            **problems(400, 401, 403, 413, 415, 422, 429, 503),
        },
    )
    def create(self, request: Request) -> Response:
        token = request.auth
        if not isinstance(token, DeviceToken):  # cannot happen: HasIngestScope let it in
            raise exceptions.NotAuthenticated()
        result = accept_batch(token.device, decode_batch(request), timezone.now(), token.pk)
        return Response(IngestResultSerializer(result).data)
