"""Admin for peak guards (one per device) and, read-only, the alerts they raised."""

from django.contrib import admin

from peakguard.models import PeakAlert, PeakGuard


@admin.register(PeakGuard)
class PeakGuardAdmin(admin.ModelAdmin):
    list_display = ("device", "webhook_url", "threshold_kw", "enabled")
    list_filter = ("enabled",)
    search_fields = ("device__device_id", "device__name", "webhook_url")
    autocomplete_fields = ("device",)


@admin.register(PeakAlert)
class PeakAlertAdmin(admin.ModelAdmin):
    list_display = (
        "device",
        "quarter_start",
        "projected_kw",
        "threshold_kw",
        "state",
        "attempts",
        "delivered_at",
    )
    list_filter = ("delivered_at", "gave_up_at")
    search_fields = ("device__device_id",)
    date_hierarchy = "quarter_start"

    # Alerts are a record of what was sent: nobody adds or edits them by hand.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
