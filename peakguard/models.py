"""A device's peak guard (where to send the warning) and the alerts it raised."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from peakguard import outbound


class PeakGuard(models.Model):
    device = models.OneToOneField(
        "telemetry.Device", on_delete=models.CASCADE, related_name="peak_guard"
    )
    webhook_url = models.CharField(
        "webhook URL",
        max_length=outbound.MAX_URL_LENGTH,
        help_text="HTTPS address that receives one JSON POST per quarter whose projection "
        "crosses the threshold.",
    )
    threshold_kw = models.FloatField(
        "threshold (kW)",
        null=True,
        blank=True,
        validators=[MinValueValidator(0.1)],
        help_text="Empty: the month's billed peak so far, i.e. its highest quarter but at "
        "least 2.5 kW (below that a quarter does not raise the bill).",
    )
    target_kw = models.FloatField(
        "target peak (kW)",
        null=True,
        blank=True,
        validators=[MinValueValidator(0.1)],
        help_text="The household's own goal for the month's peak, which may be below the "
        "peak so far: without a threshold, warnings are raised against it.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "peak guard"

    def __str__(self) -> str:
        return f"peak guard of {self.device}"

    def clean(self) -> None:
        self.webhook_url = (self.webhook_url or "").strip()
        if not self.webhook_url:
            return  # the field's own "required" error says it
        try:
            # Resolves the host now, so a typo or a private target is caught at once;
            # delivery checks again, as DNS may change in between.
            outbound.vet(self.webhook_url, allow_private=settings.PEAKGUARD_ALLOW_PRIVATE_TARGETS)
        except outbound.WebhookError as exc:
            raise ValidationError({"webhook_url": f"This address cannot be used: {exc}."}) from exc


class WebhookOutbox(models.Model):
    """The delivery state of one webhook message (peakguard.delivery sends the rows of
    every concrete outbox the same way): due at next_attempt_at, leased by one worker
    until claimed_until, finished by delivered_at or gave_up_at."""

    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    gave_up_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        abstract = True

    @property
    def state(self) -> str:
        if self.delivered_at is not None:
            return "delivered"
        if self.gave_up_at is not None:
            return "failed"
        return "pending"


class PeakAlert(WebhookOutbox):
    """One quarter whose projection crossed the threshold (``projected``), or that can
    no longer end below it (``broken``); also the delivery's outbox.

    (device, quarter_start, kind) is unique: whichever process and batch sees the
    crossing first inserts the row, every later one inserts nothing, so a quarter is
    announced once per kind however many batches, retries and workers there are.
    """

    PROJECTED, BROKEN = "projected", "broken"

    device = models.ForeignKey(
        "telemetry.Device", on_delete=models.CASCADE, related_name="peak_alerts"
    )
    quarter_start = models.DateTimeField()
    kind = models.CharField(
        max_length=10,
        default=PROJECTED,
        choices=[(PROJECTED, "projected above"), (BROKEN, "peak certainly broken")],
    )
    quarter_end = models.DateTimeField()
    average_so_far_kw = models.FloatField()
    projected_kw = models.FloatField()
    threshold_kw = models.FloatField()
    month_peak_kw = models.FloatField(null=True)
    target_kw = models.FloatField(null=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-quarter_start"]
        constraints = [
            models.UniqueConstraint(
                fields=["device", "quarter_start", "kind"], name="peakalert_one_per_quarter"
            )
        ]
        indexes = [
            # The worker's scan: only rows still to deliver, in due order.
            models.Index(
                fields=["next_attempt_at"],
                name="peakalert_pending",
                condition=models.Q(delivered_at__isnull=True, gave_up_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.device_id} {self.quarter_start.isoformat()}"
