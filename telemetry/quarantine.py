"""The server's record of rejected samples, shown in the admin as a device's quarantine.

The edge keeps the samples themselves (its quarantine table); the server keeps what it
refused and why, so whoever runs the server sees a misbehaving meter without a shell on
the edge. Recording is best effort: the 422 answer is what matters, so a database error
here is logged and swallowed, and the caller has already decided that nothing of the
batch is written.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import datetime
from typing import Any

from django.db import DatabaseError, transaction
from django.db.models import Q

from telemetry.models import Device, IngestRejection

logger = logging.getLogger(__name__)

KEEP_PER_DEVICE = 200
SAMPLE_MAX_CHARS = 4096
_MAX_ROWS_PER_BATCH = KEEP_PER_DEVICE


def rejection_rows(
    device: Device, samples: Any, errors: list[dict], now: datetime
) -> list[IngestRejection]:
    """One row per rejected sample (or one for the batch itself), problems joined."""
    reasons: dict[int | None, list[str]] = defaultdict(list)
    for error in errors:
        field = error.get("field")
        detail = error.get("detail", "")
        reasons[error.get("index")].append(f"{field} {detail}" if field else detail)
    rows = []
    for index, problems in list(reasons.items())[:_MAX_ROWS_PER_BATCH]:
        sample = ""
        if index is not None and isinstance(samples, list) and 0 <= index < len(samples):
            sample = _truncated(samples[index])
        rows.append(
            IngestRejection(
                device=device,
                received_at=now,
                index=index,
                reason="; ".join(problems),
                sample=sample,
            )
        )
    return rows


def _truncated(sample: Any) -> str:
    try:
        text = json.dumps(sample, ensure_ascii=False, default=str)
    except RecursionError:
        # JSON nested deeper than json.dumps recurses; orjson parsed it (depth < 1024).
        return "(not shown: nested too deeply)"
    if len(text) > SAMPLE_MAX_CHARS:
        return text[: SAMPLE_MAX_CHARS - 1] + "…"
    return text


def record(device: Device, samples: Any, errors: list[dict], now: datetime) -> None:
    """Store the rejections and trim the device's record to the latest KEEP_PER_DEVICE."""
    rows = rejection_rows(device, samples, errors, now)
    if not rows:
        return
    try:
        with transaction.atomic():
            IngestRejection.objects.bulk_create(rows)
            cutoff = (
                IngestRejection.objects.filter(device=device)
                .order_by("-received_at", "-id")
                .values_list("received_at", "id")[KEEP_PER_DEVICE : KEEP_PER_DEVICE + 1]
            )
            for received_at, row_id in cutoff:
                IngestRejection.objects.filter(
                    Q(received_at__lt=received_at) | Q(received_at=received_at, id__lte=row_id),
                    device=device,
                ).delete()
    except DatabaseError:
        logger.warning("could not record %d rejected sample(s) of %s", len(rows), device)
