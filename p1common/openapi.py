"""OpenAPI pieces shared by every endpoint: problem responses, auth, the schema class.

Answers and query parameters are declared once, as the serializers that render and
parse them (telemetry.serializers, capacity.serializers). What no serializer renders is
a plain JSON Schema dict registered as a component (``component``): the problem+json
errors (p1common.problems writes them) and the ingest body (telemetry.validation checks
it, docs/adr/0002). ``add_components`` (a drf-spectacular postprocessing hook) puts them
into the schema and adds the headers a client must act on (Retry-After,
WWW-Authenticate).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from p1common.problems import PROBLEM_CONTENT_TYPE

if TYPE_CHECKING:
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.utils import _SerializerType
    from rest_framework.request import Request

_COMPONENTS: dict[str, dict[str, Any]] = {}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def component(name: str, schema: dict[str, Any]) -> dict[str, str]:
    """Register a schema component; returns a reference to it."""
    _COMPONENTS[name] = schema
    return ref(name)


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def obj(
    required: dict[str, Any], optional: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """An object schema: ``required`` keys are always present (maybe null)."""
    schema = {"type": "object", "properties": {**required, **(optional or {})}, **extra}
    if required:  # OpenAPI 3.0 forbids an empty list
        schema["required"] = list(required)
    return schema


STRING = {"type": "string"}
DATETIME = {"type": "string", "format": "date-time"}
INTEGER = {"type": "integer"}

PROBLEM = component(
    "ProblemDetail",
    obj(
        {
            "type": {**STRING, "description": "A URI naming the problem; about:blank."},
            "title": {**STRING, "description": "The HTTP status phrase."},
            "status": INTEGER,
        },
        {
            "detail": {**STRING, "description": "What went wrong, for a person."},
            "instance": STRING,
            "errors": {"description": "Details per field or sample (see the 400 and 422 answers)."},
        },
        description="An error, as application/problem+json (RFC 9457).",
    ),
)
VALIDATION_PROBLEM = component(
    "ValidationProblem",
    {
        "allOf": [
            PROBLEM,
            obj(
                {},
                {
                    "errors": {
                        "type": "object",
                        "description": "Messages per query or path parameter.",
                        "additionalProperties": {"type": "array", "items": STRING},
                    }
                },
            ),
        ]
    },
)
SAMPLE_ERROR = component(
    "SampleError",
    obj(
        {
            "index": nullable(
                {**INTEGER, "description": "Position of the sample; null: the batch itself."}
            ),
            "field": nullable(STRING),
            "detail": STRING,
        }
    ),
)
BATCH_PROBLEM = component(
    "BatchProblem",
    {
        "allOf": [
            PROBLEM,
            obj({"errors": {"type": "array", "items": SAMPLE_ERROR}}),
        ]
    },
)

_ERRORS = {
    400: (VALIDATION_PROBLEM, "Malformed JSON or a bad query/path parameter."),
    401: (PROBLEM, "No credentials, or an invalid or revoked token."),
    403: (PROBLEM, "The token lacks the scope, or may not act for that device."),
    404: (PROBLEM, "No such device, or one the caller may not read."),
    413: (PROBLEM, "The body or the batch is too large."),
    415: (PROBLEM, "The body is not uncompressed application/json."),
    422: (BATCH_PROBLEM, "Invalid samples, each named by index; nothing was written."),
    429: (
        PROBLEM,
        "Throttled: too many invalid tokens from this address (any Bearer request), or "
        "too many batches from this device (ingest). Wait Retry-After seconds.",
    ),
    503: (PROBLEM, "The database cannot be reached; retry after Retry-After seconds."),
}
# Headers sent with these answers (p1common.problems keeps them on the problem).
_HEADERS = {
    401: ("WWW-Authenticate", "The authentication scheme: Bearer."),
    429: ("Retry-After", "Seconds to wait before the next request."),
    503: ("Retry-After", "Seconds to wait before retrying."),
}


def problems(*codes: int) -> dict:
    """extend_schema responses for these error codes, as application/problem+json."""
    return {
        (code, PROBLEM_CONTENT_TYPE): OpenApiResponse(
            response=_ERRORS[code][0], description=_ERRORS[code][1]
        )
        for code in codes
    }


READ_ERRORS = (400, 401, 403, 404, 429, 503)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"].rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _inline(node: Any, schemas: dict[str, Any], names: set[str]) -> Any:
    """``node`` with references to ``names`` replaced by their schemas (also where
    drf-spectacular wraps one as {"allOf": [ref], "nullable": true})."""
    if isinstance(node, list):
        return [_inline(value, schemas, names) for value in node]
    if not isinstance(node, dict):
        return node
    target = node.get("$ref", "").rsplit("/", 1)[-1]
    if target in names:
        return _inline(schemas[target], schemas, names)
    wrapped = node.get("allOf")
    if isinstance(wrapped, list) and len(wrapped) == 1:
        target = wrapped[0].get("$ref", "").rsplit("/", 1)[-1]
        if target in names:
            rest = {key: value for key, value in node.items() if key != "allOf"}
            return {**_inline(schemas[target], schemas, names), **rest}
    return {key: _inline(value, schemas, names) for key, value in node.items()}


def inline_single_use(result: dict) -> None:
    """A part of one answer only (a series' bucket, a report's peak) is written inside
    that answer, as a reader looks for it; what several answers share stays a
    component, and so does every answer and every hand-registered component."""
    schemas = result["components"]["schemas"]
    uses = Counter(name for schema in schemas.values() for name in _refs(schema))
    answers = set(_refs(result.get("paths", {})))
    names = {
        name
        for name, count in uses.items()
        if count == 1 and name not in answers and name not in _COMPONENTS
    }
    every = dict(schemas)
    schemas.clear()
    schemas.update(
        {name: _inline(schema, every, names) for name, schema in every.items() if name not in names}
    )


def add_components(
    result: dict[str, Any], generator: SchemaGenerator, request: Request | None, public: bool
) -> dict[str, Any]:
    """Postprocessing hook: our components, single-use parts inlined, and the headers of
    error answers."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(_COMPONENTS)
    inline_single_use(result)
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody")
            if body is not None:
                body["required"] = True  # raw request schemas default to optional
            for code, response in operation.get("responses", {}).items():
                header = _HEADERS.get(int(code))
                if header is not None:
                    name, description = header
                    response.setdefault("headers", {})[name] = {
                        "schema": STRING,
                        "required": True,
                        "description": description,
                    }
    return result


class AutoSchema(SpectacularAutoSchema):
    """Our list actions answer one object (e.g. {"devices": [...]}), never a bare list."""

    def _is_list_view(self, serializer: _SerializerType | None = None) -> bool:
        return False

    def _process_override_parameters(self, direction: str = "request") -> dict:
        """A query serializer's field that takes an empty value as "left out"
        (``blank_is_absent``) says so: allowEmptyValue, which drf-spectacular never
        writes."""
        result: dict = super()._process_override_parameters(direction)
        for parameter in self.get_override_parameters():
            if not isinstance(parameter, type | serializers.Serializer):
                continue
            fields = parameter().fields if isinstance(parameter, type) else parameter.fields
            for name, field in fields.items():
                built = result.get((name, "query"))
                if built and getattr(field, "blank_is_absent", False) and not field.required:
                    built["allowEmptyValue"] = True
        return result

    def _map_serializer_field(
        self, field: serializers.Field, direction: str, bypass_extensions: bool = False
    ) -> dict[str, Any]:
        # drf-spectacular leaves out a nested list's max_length; the answer states it.
        schema: dict[str, Any] = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.ListSerializer):
            max_items = field.max_length  # type: ignore[attr-defined]  # DRF sets it in __init__; the stubs omit it
            if max_items is not None:
                schema = {**schema, "maxItems": max_items}
        return schema


class DeviceTokenScheme(OpenApiAuthenticationExtension):
    target_class = "telemetry.auth.DeviceTokenAuthentication"
    name = "deviceToken"

    def get_security_definition(self, auto_schema: SpectacularAutoSchema) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A device token (scopes ingest and/or read), issued in the admin.",
        }
