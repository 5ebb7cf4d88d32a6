"""Health alert episodes (integrations.health) and their webhook messages."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from peakguard.models import WebhookOutbox


class HealthEpisode(models.Model):
    """One stretch of time during which a device had one problem.

    At most one episode of a kind is open per device (a partial unique constraint), so
    however many evaluations, processes and cycles see the problem, it is raised once;
    it is cleared once, when the problem is gone, and a new episode opens if it comes
    back. A meter change is dated by its register break, and (device, started_at) is
    unique among meter changes, so one break never raises twice. Only there: a stale
    meter's episode is dated by its newest sample, and a meter still dead after an
    episode that was cleared (it turned into a backlog, say) must open again with the
    same date.
    """

    STALE = "stale"
    CONSENT_LAPSED = "consent_lapsed"
    METER_CHANGED = "meter_changed"
    EDGE_BACKLOG = "edge_backlog"
    KINDS = [
        (STALE, "no sample for too long"),
        (CONSENT_LAPSED, "P1-port consent lapsed (Belgian peak fields turned null)"),
        (METER_CHANGED, "meter changed (register break)"),
        (EDGE_BACKLOG, "edge spool backing up"),
    ]

    device = models.ForeignKey(
        "telemetry.Device", on_delete=models.CASCADE, related_name="health_episodes"
    )
    kind = models.CharField(max_length=20, choices=KINDS)
    started_at = models.DateTimeField()
    cleared_at = models.DateTimeField(null=True, blank=True)
    message = models.TextField(help_text="What happened and what to do, as sent.")
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["device", "kind"],
                condition=models.Q(cleared_at__isnull=True),
                name="healthepisode_one_open_per_kind",
            ),
            models.UniqueConstraint(
                fields=["device", "kind", "started_at"],
                condition=models.Q(kind="meter_changed"),
                name="healthepisode_once_per_break",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} {self.kind} {self.started_at.isoformat()}"

    @property
    def is_open(self) -> bool:
        return self.cleared_at is None


class SampleArrival(models.Model):
    """What the health evaluator saw of a device's newest sample when it last looked:
    the record from which it tells an edge uploading old readings (the newest sample
    moved, but is old) from a silent one (it did not move). Samples carry no receipt
    time, and a token's last use is no evidence that anything was stored."""

    device = models.OneToOneField(
        "telemetry.Device", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    newest = models.DateTimeField(null=True, help_text="The newest sample seen.")
    checked_at = models.DateTimeField(help_text="The evaluation that last looked.")
    arrived_at = models.DateTimeField(
        null=True, help_text="The evaluation that first saw a newer sample than the one before."
    )
    arrival_lag_s = models.FloatField(
        null=True,
        help_text=(
            "How old that newer sample was at least when it arrived: the evaluation before "
            "it minus its ts."
        ),
    )

    def __str__(self) -> str:
        return f"{self.device_id} {self.newest}"


class HealthNotice(WebhookOutbox):
    """The webhook message of an episode's start ("raised") or end ("cleared"); sent by
    peakguard.delivery to the device's peak-guard webhook URL."""

    RAISED, CLEARED = "raised", "cleared"

    episode = models.ForeignKey(HealthEpisode, on_delete=models.CASCADE, related_name="notices")
    device = models.ForeignKey("telemetry.Device", on_delete=models.CASCADE, related_name="+")
    event = models.CharField(max_length=10, choices=[(RAISED, RAISED), (CLEARED, CLEARED)])
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["episode", "event"], name="healthnotice_once_per_event")
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="healthnotice_pending",
                condition=models.Q(delivered_at__isnull=True, gave_up_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.episode} {self.event}"
