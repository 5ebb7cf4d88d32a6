from django.db import migrations

from telemetry.storage.schema import tune_sample_storage, untune_sample_storage


class Migration(migrations.Migration):
    """TimescaleDB only (elsewhere nothing to do): the chunk interval and compression
    delay measured by bench/storage.py (docs/PERFORMANCE.md, issue 13), and refresh
    policies that look back less than the shortest raw-sample retention."""

    dependencies = [("telemetry", "0007_pending_batch")]

    operations = [migrations.RunPython(tune_sample_storage, untune_sample_storage)]
