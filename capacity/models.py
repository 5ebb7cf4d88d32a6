"""Quarter power, materialized per device as samples arrive."""

from __future__ import annotations

from django.db import models


class CapacityQuarter(models.Model):
    """The power of one clock quarter, kept current by the ingest path.

    A quarter's power depends on its neighbours (boundary values are interpolated across
    them), so it cannot be a continuous aggregate; ingest recomputes the quarters a batch
    touches and the non-empty quarter on either side (capacity.materialize). Monthly
    peaks then read 3,000 small rows a month instead of computing them.
    """

    pk = models.CompositePrimaryKey("device_id", "bucket")
    # A plain column like the rollups': the quarter relation is keyed the same way.
    device_id = models.BigIntegerField()
    bucket = models.DateTimeField()
    kw = models.FloatField()
    coverage = models.FloatField()
    sample_count = models.BigIntegerField()
    first_ts = models.DateTimeField()
    last_ts = models.DateTimeField()

    class Meta:
        db_table = "capacity_quarter"

    def __str__(self) -> str:
        return f"{self.device_id} {self.bucket.isoformat()} {self.kw:.3f} kW"


class CapacityMonth(models.Model):
    """A device's monthly peak quarter, kept current with its quarters.

    ``month_start`` is local midnight on the 1st in the device's time zone, as a UTC
    instant; a change of time zone rebuilds the device's months.
    """

    pk = models.CompositePrimaryKey("device_id", "month_start")
    device_id = models.BigIntegerField()
    month_start = models.DateTimeField()
    month_end = models.DateTimeField()
    peak_kw = models.FloatField()
    peak_bucket = models.DateTimeField()
    # Kept with the peak so that a month answer reads a dozen rows, not a month or a
    # year of quarters: the month's quarters with data and its complete quarters (its
    # coverage), and the meter's own running peak as it last reported it (the hour it
    # was seen in breaks ties).
    quarters_with_data = models.IntegerField(db_default=0)
    complete_quarters = models.IntegerField(db_default=0)
    meter_peak_w = models.FloatField(null=True)
    meter_peak_bucket = models.DateTimeField(null=True)
    meter_peak_ts = models.DateTimeField(null=True)

    class Meta:
        db_table = "capacity_month"

    def __str__(self) -> str:
        return f"{self.device_id} {self.month_start.isoformat()} {self.peak_kw:.3f} kW"


class MeterMonthPeak(models.Model):
    """A month's maximum quarter as the meter itself reported it in its telegram.

    ``closed``: from the meter's 13-month history (0-0:98.1.0), a month the meter has
    finished; otherwise the running month's 1-0:1.6.0 at ``read_at``. One row per
    device and month: a repeated read changes nothing (capacity.meter_history).
    """

    device = models.ForeignKey("telemetry.Device", on_delete=models.CASCADE)
    month = models.DateField(help_text="The first day of the calendar month.")
    peak_kw = models.FloatField()
    peak_ts = models.DateTimeField(null=True)
    closed = models.BooleanField()
    read_at = models.DateTimeField()

    class Meta:
        db_table = "capacity_meter_month"
        constraints = [
            models.UniqueConstraint(fields=["device", "month"], name="capacity_meter_month_key")
        ]

    def __str__(self) -> str:
        return f"{self.device_id} {self.month:%Y-%m} {self.peak_kw:.3f} kW (meter)"


class OperatorQuarter(models.Model):
    """A quarter as the grid operator measured it (the Mijn Fluvius export), kept apart
    from ours: capacity.fluvius imports it, capacity.reconciliation compares the two."""

    device = models.ForeignKey("telemetry.Device", on_delete=models.CASCADE)
    bucket = models.DateTimeField(help_text="The quarter's start (UTC).")
    import_kwh = models.FloatField(help_text="Offtake in the quarter, day and night summed.")
    kw = models.FloatField(help_text="import_kwh x 4.")
    status = models.CharField(max_length=40, help_text="The export's validation status.")
    ean = models.CharField(max_length=18)
    imported_at = models.DateTimeField()

    class Meta:
        db_table = "capacity_operator_quarter"
        constraints = [
            models.UniqueConstraint(
                fields=["device", "bucket"], name="capacity_operator_quarter_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.device_id} {self.bucket.isoformat()} {self.kw:.3f} kW (operator)"
