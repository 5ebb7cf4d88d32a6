"""Writing months of history at once.

The database's storage plan does it (telemetry.storage ``insert_history``): on
PostgreSQL the ingest insert itself (its rollup merge is one set-based statement per
batch); on SQLite a faster path than the ingest refresh's runs of at most 96 buckets,
storing the same values (tests/test_demo_history.py compares them, and
bench/demo_backfill.py measures the two on the same history). The capacity tables are
rebuilt once by the caller.

Neither path runs the ingest pipeline's steps (telemetry.pipeline): history is not
live data, and a per-batch quarter refresh would redo what the one rebuild does.
"""

from __future__ import annotations

from typing import Any

from telemetry.storage import plan_for


def insert_history(device_pk: int, columns: list[list[Any] | None]) -> int:
    """Insert one chunk of samples (wire.SAMPLE_FIELDS order) with its rollups; returns
    how many rows were new. Capacity tables are left to the caller (one rebuild)."""
    return plan_for().insert_history(device_pk, columns)
