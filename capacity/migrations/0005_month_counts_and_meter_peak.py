"""capacity_month keeps each month's complete quarters and the meter's running peak, so
that a month answer reads a dozen rows instead of a year of quarters and hours."""

from django.db import migrations, models

# Filled from the tables they summarise, as capacity.materialize keeps them from now on.
# 0.9: capacity.rules.COMPLETE_COVERAGE when this was written.
BACKFILL = [
    """
    UPDATE capacity_month SET complete_quarters = (
        SELECT count(*) FROM capacity_quarter q
        WHERE q.device_id = capacity_month.device_id
            AND q.bucket >= capacity_month.month_start AND q.bucket < capacity_month.month_end
            AND q.coverage >= 0.9)
    """,
    """
    UPDATE capacity_month SET (meter_peak_w, meter_peak_bucket, meter_peak_ts) = (
        SELECT h.meter_peak_w, h.bucket, h.meter_peak_ts FROM telemetry_hour h
        WHERE h.device_id = capacity_month.device_id
            AND h.bucket >= capacity_month.month_start AND h.bucket < capacity_month.month_end
            AND h.meter_peak_w IS NOT NULL
        ORDER BY h.meter_peak_w DESC, h.bucket DESC LIMIT 1)
    """,
]


class Migration(migrations.Migration):
    dependencies = [
        ("capacity", "0004_operator_quarter"),
        ("telemetry", "0004_rollup_relations"),
    ]

    operations = [
        migrations.AddField(
            model_name="capacitymonth",
            name="complete_quarters",
            field=models.IntegerField(db_default=0),
        ),
        migrations.AddField(
            model_name="capacitymonth",
            name="meter_peak_w",
            field=models.FloatField(null=True),
        ),
        migrations.AddField(
            model_name="capacitymonth",
            name="meter_peak_bucket",
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name="capacitymonth",
            name="meter_peak_ts",
            field=models.DateTimeField(null=True),
        ),
        *(migrations.RunSQL(sql, migrations.RunSQL.noop) for sql in BACKFILL),
    ]
