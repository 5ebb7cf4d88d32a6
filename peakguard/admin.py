"""Admin for peak guards (one per device) and, read-only, the alerts they raised.

The guard is also edited where people look for it: on the device's own page. telemetry
must not depend on peakguard, so this module re-registers the device admin with the
guard as an extra inline instead of telemetry/admin.py importing it.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from peakguard.models import PeakAlert, PeakGuard
from telemetry.admin import DeviceAdmin
from telemetry.models import Device


class PeakGuardInline(admin.StackedInline):
    model = PeakGuard
    extra = 0
    max_num = 1
    fields = ("webhook_url", "threshold_kw", "target_kw", "enabled")
    verbose_name = "peak guard webhook"


admin.site.unregister(Device)


@admin.register(Device)
class DeviceWithPeakGuardAdmin(DeviceAdmin):
    inlines = [*DeviceAdmin.inlines, PeakGuardInline]


@admin.register(PeakGuard)
class PeakGuardAdmin(admin.ModelAdmin):
    list_display = ("device", "webhook_url", "threshold_kw", "target_kw", "enabled")
    list_filter = ("enabled",)
    search_fields = ("device__device_id", "device__name", "webhook_url")
    autocomplete_fields = ("device",)


@admin.register(PeakAlert)
class PeakAlertAdmin(admin.ModelAdmin):
    list_display = (
        "device",
        "quarter_start",
        "kind",
        "projected_kw",
        "threshold_kw",
        "state",
        "attempts",
        "delivered_at",
    )
    list_filter = ("kind", "delivered_at", "gave_up_at")
    search_fields = ("device__device_id",)
    date_hierarchy = "quarter_start"

    # Alerts are a record of what was sent: nobody adds or edits them by hand.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: PeakAlert | None = None) -> bool:
        return False
