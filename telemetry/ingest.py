"""Writing a validated batch: one INSERT ... ON CONFLICT (device, ts) DO NOTHING, with
the rollups and register breaks it changes, the way this database's storage plan does
it (telemetry.storage).

The returned count is what the database really inserted, so the answer's duplicates
are exact even when two overlapping batches race each other.
"""

from __future__ import annotations

from typing import Any

from telemetry.storage import AfterInsert, plan_for

__all__ = ["AfterInsert", "insert_columns"]


def insert_columns(
    device_pk: int,
    columns: list[list[Any] | None],
    after_insert: AfterInsert | None = None,
) -> int:
    """Insert one batch given as columns (wire.SAMPLE_FIELDS order, None for a field no
    sample has) and keep the rollups and register breaks current; returns how many rows
    were new. ``after_insert(oldest, newest, inserted)`` runs when rows were new, where
    it sees them committed with everything derived from them (telemetry.pipeline)."""
    return plan_for().insert_batch(device_pk, columns, after_insert)
