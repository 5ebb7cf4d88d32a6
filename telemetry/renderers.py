"""The JSON renderer of the read answers polled most (/v1/series, /v1/realtime): orjson,
which also embeds cached buckets as they are.

DRF's JSONRenderer (json.dumps) took about as long as the series statement for 10,000
buckets, and a tenth of a cached realtime answer's request. orjson writes the same JSON
for these answers (compact, UTF-8, shortest float form, keys in order) and takes an
``orjson.Fragment``: the cached buckets' bytes go out without being parsed and written
again (telemetry.series_cache). docs/adr/0002.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from rest_framework.renderers import JSONRenderer


class AnswerJSONRenderer(JSONRenderer):
    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if data is None:
            return b""
        return orjson.dumps(data)
