"""Stored rows against what the meter served: helpers for the fixture and profile tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edgeclient.spool import Spool

# From an answer leaving the meter to the edge's clock reading for it (see test_run_edge).
SERVE_TO_SPOOL_S = 2.5
_REGISTER_TOLERANCE_KWH = 1e-6


def readings(log: Path) -> list[dict[str, Any]]:
    """The simulator's --readings-log, one dict per measurement answer served."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def spool_depth(path: Path) -> int:
    if not path.exists():
        return 0
    with Spool(path, create=False) as spool:
        return spool.depth()


def stored_rows(device) -> list[Any]:
    from telemetry.models import Sample

    return list(Sample.objects.filter(device=device).order_by("ts"))


def utc_iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def differences(row: Any, expected: dict[str, Any]) -> list[str]:
    """Each column of ``row`` that is not what ``expected`` says, as 'name: got != want'."""
    wrong = []
    for name, want in expected.items():
        got = getattr(row, name)
        if isinstance(got, datetime):
            got = utc_iso(got)
        if want is None or got is None or isinstance(want, str):
            same = got == want
        else:
            same = abs(float(got) - float(want)) <= _REGISTER_TOLERANCE_KWH
        if not same:
            wrong.append(f"{name}: {got!r} != {want!r}")
    return wrong
