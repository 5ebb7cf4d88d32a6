"""The admin's CSV export (an action on the device list that opens the export form) and,
read-only, the health alert episodes.

The form sends the staff member to GET /v1/export, so the admin's export is the API's,
under the same access rule (staff read every device) and the same bounds.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse

from integrations.export import DEFAULT_SPAN, KINDS, MAX_SPAN
from integrations.models import HealthEpisode
from telemetry.models import Device


@admin.action(description="Export CSV (samples, quarters or months)")
def export_csv(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Device]
) -> TemplateResponse | None:
    devices = list(queryset[:2])
    if len(devices) != 1:
        modeladmin.message_user(request, "Select exactly one device to export.", messages.WARNING)
        return None
    device = devices[0]
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": f"Export {device.device_id} as CSV",
        "device": device,
        "kinds": KINDS,
        "export_url": reverse("export-list"),
        "spans": {kind: (DEFAULT_SPAN[kind].days, MAX_SPAN[kind].days) for kind in KINDS},
        "opts": modeladmin.model._meta,
    }
    return TemplateResponse(request, "admin/integrations/export.html", context)


def add_export_action() -> None:
    """Adds the action to telemetry's device admin (integrations depends on telemetry,
    never the other way)."""
    device_admin = admin.site._registry.get(Device)
    if device_admin is None:
        return
    actions = list(device_admin.actions or [])
    if export_csv not in actions:
        device_admin.actions = [*actions, export_csv]


@admin.register(HealthEpisode)
class HealthEpisodeAdmin(admin.ModelAdmin):
    """Read-only: episodes are opened and cleared by integrations.health alone."""

    list_display = ("device", "kind", "started_at", "cleared_at")
    list_filter = ("kind", ("cleared_at", admin.EmptyFieldListFilter))
    search_fields = ("device__device_id", "device__name")
    readonly_fields = ("device", "kind", "started_at", "cleared_at", "message", "details")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
