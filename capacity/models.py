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

    class Meta:
        db_table = "capacity_month"

    def __str__(self) -> str:
        return f"{self.device_id} {self.month_start.isoformat()} {self.peak_kw:.3f} kW"
