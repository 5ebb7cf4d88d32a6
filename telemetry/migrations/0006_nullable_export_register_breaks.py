import django.db.models.deletion
from django.db import migrations, models

from telemetry.storage.schema import (
    allow_null_export,
    require_export,
    require_nullable_column_support,
)


class Migration(migrations.Migration):
    dependencies = [
        ("telemetry", "0005_ingest_rejection"),
    ]

    operations = [
        # Meters without export registers exist. On a hypertable with compression, DROP
        # NOT NULL needs TimescaleDB 2.18 or later: an older one is named in one line.
        migrations.RunPython(require_nullable_column_support, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="sample",
            name="energy_export_kwh",
            field=models.FloatField(null=True),
        ),
        # The rollups are unmanaged: these change the state only; allow_null_export
        # changes the tables where ingest keeps them (a continuous aggregate's columns
        # are nullable already).
        migrations.AlterField(
            model_name="quarterrollup",
            name="first_export_kwh",
            field=models.FloatField(null=True),
        ),
        migrations.AlterField(
            model_name="quarterrollup",
            name="last_export_kwh",
            field=models.FloatField(null=True),
        ),
        migrations.AlterField(
            model_name="hourrollup",
            name="first_export_kwh",
            field=models.FloatField(null=True),
        ),
        migrations.AlterField(
            model_name="hourrollup",
            name="last_export_kwh",
            field=models.FloatField(null=True),
        ),
        migrations.RunPython(allow_null_export, require_export),
        migrations.CreateModel(
            name="RegisterBreak",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("ts", models.DateTimeField(help_text="The first sample of the new segment.")),
                (
                    "prev_ts",
                    models.DateTimeField(help_text="The last sample of the previous segment."),
                ),
                ("prev_import_kwh", models.FloatField()),
                ("prev_export_kwh", models.FloatField(null=True)),
                ("import_kwh", models.FloatField()),
                ("export_kwh", models.FloatField(null=True)),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("went-down", "a register went down"),
                            ("impossible-step", "a step no household connection can carry"),
                        ],
                        max_length=20,
                    ),
                ),
                (
                    "device",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="register_breaks",
                        to="telemetry.device",
                    ),
                ),
            ],
            options={
                "ordering": ["device", "ts"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("device", "ts"), name="register_break_device_ts"
                    )
                ],
            },
        ),
    ]
