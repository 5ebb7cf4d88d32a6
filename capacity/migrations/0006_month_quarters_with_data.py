"""capacity_month keeps each month's quarters with data too, so that a month answer
reads the top of its quarters instead of counting all of them."""

from django.db import migrations, models

# Filled from the quarters, as capacity.materialize keeps it from now on.
BACKFILL = """
UPDATE capacity_month SET quarters_with_data = (
    SELECT count(*) FROM capacity_quarter q
    WHERE q.device_id = capacity_month.device_id
        AND q.bucket >= capacity_month.month_start AND q.bucket < capacity_month.month_end)
"""


class Migration(migrations.Migration):
    dependencies = [("capacity", "0005_month_counts_and_meter_peak")]

    operations = [
        migrations.AddField(
            model_name="capacitymonth",
            name="quarters_with_data",
            field=models.IntegerField(db_default=0),
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
    ]
