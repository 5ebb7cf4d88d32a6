from django.db import migrations

from telemetry.storage.schema import make_sample_hypertable


class Migration(migrations.Migration):
    dependencies = [("telemetry", "0001_initial")]

    operations = [
        # Nothing to undo on the way back: dropping the table drops the hypertable.
        migrations.RunPython(make_sample_hypertable, migrations.RunPython.noop),
    ]
