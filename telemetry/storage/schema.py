"""The migrations' storage steps (RunPython), one per plan-dependent change.

Each asks the database's plan what to run, then forgets the choice: a step may turn
one plan into another (the hypertable), and the next step must see it.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.base.schema import BaseDatabaseSchemaEditor

from telemetry.storage import StoragePlan, forget, plan_for


def _plan(schema_editor: BaseDatabaseSchemaEditor) -> StoragePlan:
    return plan_for(schema_editor.connection.alias)


def make_sample_hypertable(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Sample becomes a compressed hypertable when TimescaleDB is here (0002)."""
    _plan(schema_editor).make_sample_hypertable(schema_editor)
    forget(schema_editor.connection.alias)


def create_rollup_relations(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Continuous aggregates on TimescaleDB, tables elsewhere (0004)."""
    _plan(schema_editor).create_rollup_relations(apps, schema_editor)
    forget(schema_editor.connection.alias)


def drop_rollup_relations(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _plan(schema_editor).drop_rollup_relations(apps, schema_editor)
    forget(schema_editor.connection.alias)


def require_nullable_column_support(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Say in one line which TimescaleDB a column change needs, instead of failing inside
    ALTER TABLE with the extension's generic refusal (0006)."""
    _plan(schema_editor).require_nullable_column_support(schema_editor)


def allow_null_export(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """The rollup tables' export columns become nullable where they are tables (0006)."""
    _plan(schema_editor).alter_export_columns(apps, schema_editor, null=True)


def require_export(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    _plan(schema_editor).alter_export_columns(apps, schema_editor, null=False)


def tune_sample_storage(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """The chunk interval and compression delay the storage bench chose, and refresh
    policies that never reach a range raw-sample retention dropped (0008)."""
    from telemetry.storage import timescale

    _plan(schema_editor).tune_sample_storage(
        schema_editor,
        timescale.CHUNK_INTERVAL,
        timescale.COMPRESS_AFTER,
        timescale.AGGREGATE_REFRESH_START,
    )


def untune_sample_storage(apps: Any, schema_editor: BaseDatabaseSchemaEditor) -> None:
    """Back to what 0002 and 0004 made before 0008."""
    _plan(schema_editor).tune_sample_storage(schema_editor, "7 days", "30 days", None)
