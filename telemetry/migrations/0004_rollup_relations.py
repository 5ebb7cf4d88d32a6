from django.db import migrations

from telemetry.storage.schema import create_rollup_relations, drop_rollup_relations


class Migration(migrations.Migration):
    # CREATE MATERIALIZED VIEW ... WITH (timescaledb.continuous) refuses to run inside a
    # transaction block.
    atomic = False

    dependencies = [("telemetry", "0003_rollup_models")]

    operations = [migrations.RunPython(create_rollup_relations, drop_rollup_relations)]
