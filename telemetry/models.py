"""Devices, their tokens, and the samples they send."""

from __future__ import annotations

import zoneinfo
from collections.abc import Collection
from typing import Any, Self

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone as django_timezone

from p1common.env import DEVICE_ID_PATTERN

DEVICE_ID_VALIDATOR = RegexValidator(
    DEVICE_ID_PATTERN,
    "Use 1 to 64 lowercase letters, digits and inner hyphens.",
)


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known IANA time zone.")


# The eight Fluvius areas since the 2025 merger (as the Vlaamse Nutsregulator's tariff
# sheets name them), and the regions without a measured-peak tariff for households.
# capacity.tariffs holds the prices; a test checks that it covers every Flemish area.
NETWORK_AREAS = [
    ("fluvius-antwerpen", "Fluvius Antwerpen"),
    ("fluvius-halle-vilvoorde", "Fluvius Halle-Vilvoorde"),
    ("fluvius-imewo", "Fluvius Imewo"),
    ("fluvius-kempen", "Fluvius Kempen"),
    ("fluvius-limburg", "Fluvius Limburg"),
    ("fluvius-midden-vlaanderen", "Fluvius Midden-Vlaanderen"),
    ("fluvius-west", "Fluvius West"),
    ("fluvius-zenne-dijle", "Fluvius Zenne-Dijle"),
    ("wallonia", "Wallonia (no measured-peak tariff)"),
    ("brussels", "Brussels (no measured-peak tariff)"),
]
EAN_VALIDATOR = RegexValidator(r"^\d{18}$", "An EAN is 18 digits.")


def default_timezone() -> str:
    return settings.DEFAULT_DEVICE_TIMEZONE


class Device(models.Model):
    device_id = models.CharField(
        max_length=64,
        unique=True,
        validators=[DEVICE_ID_VALIDATOR],
        help_text="Short public identifier used in the API, e.g. home-p1.",
    )
    name = models.CharField(max_length=200, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="devices",
    )
    timezone = models.CharField(
        max_length=64, default=default_timezone, validators=[validate_timezone]
    )
    capacity_price_eur_per_kw_year = models.DecimalField(
        "capacity price (EUR/kW/year)",
        max_digits=8,
        decimal_places=4,
        null=True,
        blank=True,
        validators=[MinValueValidator(0)],
    )
    # The capacity tariff's inputs (capacity.tariffs holds the prices per area and year).
    network_area = models.CharField(
        max_length=40,
        blank=True,
        choices=NETWORK_AREAS,
        help_text="The grid operator's area; prices each month from that year's tariff.",
    )
    social_tariff = models.BooleanField(
        default=False, help_text="The household has the social tariff: no capacity cost."
    )
    ean = models.CharField(
        "EAN",
        max_length=18,
        blank=True,
        validators=[EAN_VALIDATOR],
        help_text="The access point's EAN (18 digits): an operator export must name it.",
    )
    created_at = models.DateTimeField(default=django_timezone.now, editable=False)
    # Raised by every drop of stored series blocks (telemetry.series_blocks): a block
    # computed before a drop is not stored after it.
    series_generation = models.BigIntegerField(default=0, editable=False)
    # Not a field: the zone as loaded, set by from_db (a new instance has none).
    _timezone_at_load: str | None

    class Meta:
        ordering = ["device_id"]

    def __str__(self) -> str:
        return self.device_id

    @classmethod
    def from_db(cls, db: str | None, field_names: Collection[str], values: Collection[Any]) -> Self:
        instance = super().from_db(db, field_names, values)
        # Derived capacity months depend on the zone; a save compares against this.
        instance._timezone_at_load = instance.__dict__.get("timezone")
        return instance


class DeviceToken(models.Model):
    SCOPE_INGEST = "ingest"
    SCOPE_READ = "read"
    SCOPES = (SCOPE_INGEST, SCOPE_READ)

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="tokens")
    label = models.CharField(max_length=100, blank=True)
    # The token itself is never stored: only its SHA-256 and a prefix to recognise it.
    prefix = models.CharField(max_length=12, db_index=True, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.CharField(max_length=50, help_text="Comma-separated: ingest, read.")
    created_at = models.DateTimeField(default=django_timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Made by DEVICE_TOKENS (telemetry.provisioning), which alone revokes and restores it;
    # not the label, which an admin may type or change.
    provisioned = models.BooleanField(default=False, editable=False)
    # Revoked because it left DEVICE_TOKENS: back in the list, it is active again. A
    # revocation in the admin clears this, and then the list cannot undo it.
    revoked_by_list = models.BooleanField(default=False, editable=False)
    # Not a field: the raw token just minted, held on the instance by the admin's
    # save_model for its response_add only (telemetry.admin); never stored.
    _raw_token: str

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.device})"

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(s for s in self.scopes.split(",") if s)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return self.is_active and scope in self.scope_set

    def revoke(self, *, by_list: bool = False) -> None:
        """Revoke; ``by_list`` only from provisioning. An admin's revocation of a token the
        list revoked makes it the admin's, so the list's return no longer restores it."""
        if self.revoked_at is None:
            self.revoked_at = django_timezone.now()
            self.revoked_by_list = by_list
        elif self.revoked_by_list and not by_list:
            self.revoked_by_list = False
        else:
            return
        # post_save drops the cached lookup
        self.save(update_fields=["revoked_at", "revoked_by_list"])

    def restore(self) -> None:
        """Active again: only for a token the list revoked and lists again."""
        self.revoked_at = None
        self.revoked_by_list = False
        self.save(update_fields=["revoked_at", "revoked_by_list"])


class Sample(models.Model):
    """One meter reading. (device, ts) is the key: a retried batch inserts nothing new.

    The columns follow p1wire.SAMPLE_FIELDS; the insert path writes them with
    one statement (telemetry.storage.postgres), so keep both in step.
    """

    pk = models.CompositePrimaryKey("device", "ts")
    # PROTECT: telemetry outlives an admin's click; delete samples deliberately.
    device = models.ForeignKey(Device, on_delete=models.PROTECT, db_index=False)
    ts = models.DateTimeField()
    power_w = models.FloatField()
    energy_import_kwh = models.FloatField()
    # Null: the meter has no export registers (reported for real P1 dongles).
    energy_export_kwh = models.FloatField(null=True)
    energy_import_t1_kwh = models.FloatField(null=True)
    energy_import_t2_kwh = models.FloatField(null=True)
    energy_export_t1_kwh = models.FloatField(null=True)
    energy_export_t2_kwh = models.FloatField(null=True)
    power_l1_w = models.FloatField(null=True)
    power_l2_w = models.FloatField(null=True)
    power_l3_w = models.FloatField(null=True)
    voltage_l1_v = models.FloatField(null=True)
    voltage_l2_v = models.FloatField(null=True)
    voltage_l3_v = models.FloatField(null=True)
    current_l1_a = models.FloatField(null=True)
    current_l2_a = models.FloatField(null=True)
    current_l3_a = models.FloatField(null=True)
    tariff = models.SmallIntegerField(null=True)
    average_power_15m_w = models.FloatField(null=True)
    monthly_power_peak_w = models.FloatField(null=True)
    monthly_power_peak_ts = models.DateTimeField(null=True)
    gas_m3 = models.FloatField(null=True)
    gas_ts = models.DateTimeField(null=True)

    class Meta:
        ordering = ["device", "ts"]

    def __str__(self) -> str:
        return f"{self.device_id} {self.ts.isoformat()}"


class Rollup(models.Model):
    """Per-device aggregates of one time bucket, enough for the capacity rules.

    The relation is a TimescaleDB continuous aggregate where the extension is loaded, and
    a table kept current by the ingest path elsewhere (telemetry.storage); both have
    these columns, so the query code has one path. Never written through the ORM.
    """

    # A plain column, not a foreign key: a continuous aggregate can have no constraints.
    device_id = models.BigIntegerField()
    bucket = models.DateTimeField()
    first_ts = models.DateTimeField()
    last_ts = models.DateTimeField()
    first_import_kwh = models.FloatField()
    last_import_kwh = models.FloatField()
    # Null where the bucket's first (last) sample had no export register.
    first_export_kwh = models.FloatField(null=True)
    last_export_kwh = models.FloatField(null=True)
    sample_count = models.BigIntegerField()
    power_sum_w = models.FloatField()
    min_power_w = models.FloatField()
    max_power_w = models.FloatField()
    meter_avg_15m_w = models.FloatField(null=True)
    meter_peak_w = models.FloatField(null=True)
    meter_peak_ts = models.DateTimeField(null=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.device_id} {self.bucket.isoformat()}"


class QuarterRollup(Rollup):
    pk = models.CompositePrimaryKey("device_id", "bucket")

    class Meta:
        managed = False
        db_table = "telemetry_quarter"


class HourRollup(Rollup):
    pk = models.CompositePrimaryKey("device_id", "bucket")

    class Meta:
        managed = False
        db_table = "telemetry_hour"


class IngestRejection(models.Model):
    """A sample the server refused with 422: the server's view of a device's quarantine.

    Written after the rejection, outside any transaction of the batch, and only for an
    authenticated device; only the latest few per device are kept (telemetry.quarantine).
    """

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="rejections")
    received_at = models.DateTimeField(default=django_timezone.now)
    # Position in the batch; null: the batch itself was wrong (unknown key, no samples).
    index = models.IntegerField(null=True, blank=True)
    reason = models.TextField(help_text="Each problem of the sample, as the 422 named it.")
    sample = models.TextField(blank=True, help_text="The sample as sent, JSON, truncated.")

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [models.Index(fields=["device", "-received_at"], name="rejection_device_recent")]

    def __str__(self) -> str:
        return f"{self.device_id} {self.received_at.isoformat()} #{self.index}"


class RegisterBreak(models.Model):
    """Where a device's registers stop being one series: the first sample of a new
    register segment, with the last reading before it (telemetry.segments).

    The step between the two readings is not consumption (a replaced meter, an edge
    pointed at another meter): energy is counted only inside segments. Derived from
    the samples and recomputed with them, so never edited by hand.
    """

    WENT_DOWN = "went-down"
    IMPOSSIBLE_STEP = "impossible-step"
    KINDS = [
        (WENT_DOWN, "a register went down"),
        (IMPOSSIBLE_STEP, "a step no household connection can carry"),
    ]

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="register_breaks")
    ts = models.DateTimeField(help_text="The first sample of the new segment.")
    prev_ts = models.DateTimeField(help_text="The last sample of the previous segment.")
    prev_import_kwh = models.FloatField()
    prev_export_kwh = models.FloatField(null=True)
    import_kwh = models.FloatField()
    export_kwh = models.FloatField(null=True)
    kind = models.CharField(max_length=20, choices=KINDS)

    class Meta:
        ordering = ["device", "ts"]
        constraints = [
            models.UniqueConstraint(fields=["device", "ts"], name="register_break_device_ts")
        ]

    def __str__(self) -> str:
        return f"{self.device_id} {self.ts.isoformat()} {self.kind}"

    @property
    def import_step_kwh(self) -> float:
        return self.import_kwh - self.prev_import_kwh

    @property
    def export_step_kwh(self) -> float | None:
        if self.export_kwh is None or self.prev_export_kwh is None:
            return None
        return self.export_kwh - self.prev_export_kwh


class PendingBatch(models.Model):
    """Work owed for a stored batch: the ingest steps over its span (register breaks,
    capacity, peak guard; telemetry.pipeline).

    Written by the same statement that stores the batch's samples, and deleted in the
    same commit as the work it stood for, so a process that dies in between loses
    nothing: whoever runs next (the request, or the ingest-steps worker) does it.
    """

    id = models.BigAutoField(primary_key=True)
    # No index on device: rows live for one worker cycle, read whole and deleted by id.
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="+", db_index=False)
    # The token that sent it, for its "last used" time; gone with the token.
    token = models.ForeignKey(
        DeviceToken, on_delete=models.SET_NULL, null=True, related_name="+", db_index=False
    )
    oldest = models.DateTimeField()
    newest = models.DateTimeField()
    inserted = models.IntegerField()
    received_at = models.DateTimeField(default=django_timezone.now)

    def __str__(self) -> str:
        return f"{self.device_id} {self.oldest.isoformat()}..{self.newest.isoformat()}"


class SeriesBlock(models.Model):
    """A block of a series answer computed ahead (telemetry.series_blocks): the buckets of
    one interval over a fixed stretch of time (a UTC day of quarters, a UTC week of
    hours, a local month of days or of a month, four local weeks of weeks), as the JSON
    the answer embeds, with the span of samples they were computed from."""

    id = models.BigAutoField(primary_key=True)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="+", db_index=False)
    interval = models.CharField(max_length=3)
    # The zone its bucket starts are written in (and, for days and longer, cut by).
    timezone = models.CharField(max_length=64)
    start = models.DateTimeField()
    end = models.DateTimeField()
    # The span of samples the buckets depend on; null where it reaches every earlier
    # sample. Never null at the end: a block with no reading after it is not stored.
    depends_from = models.DateTimeField(null=True)
    depends_until = models.DateTimeField()
    # The buckets' JSON objects, comma-separated (never empty: empty blocks are not kept).
    buckets = models.BinaryField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["device", "interval", "timezone", "start"], name="series_block_unique"
            )
        ]
        # A batch drops the blocks whose span reaches its samples: for live data the few
        # with a span ending after the batch's oldest sample.
        indexes = [models.Index(fields=["device", "depends_until"], name="series_block_until")]

    def __str__(self) -> str:
        return f"{self.device_id} {self.interval} {self.start.isoformat()}"
