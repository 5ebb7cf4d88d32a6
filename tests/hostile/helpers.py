"""What every hostile test asks of an answer and of the database."""

from __future__ import annotations

import httpx

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict:
    """A problem+json answer (RFC 9457) with this status; returns its body."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    return body


def stored_rows() -> dict[str, int]:
    """Rows of every table an ingest writes: samples, rollups and derived capacity."""
    from capacity.models import CapacityMonth, CapacityQuarter
    from telemetry.models import HourRollup, QuarterRollup, Sample

    return {
        model.__name__: model.objects.count()
        for model in (Sample, QuarterRollup, HourRollup, CapacityQuarter, CapacityMonth)
    }
