"""Admin for what the capacity tariff takes from outside our samples: the meter's own
monthly maxima (read-only) and the grid operator's quarters, with the upload form of a
Mijn Fluvius export (capacity.fluvius)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from capacity.fluvius import FluviusFormatError, WrongEan, decode, import_export, summary
from capacity.models import MeterMonthPeak, OperatorQuarter
from telemetry.models import Device

# A Mijn Fluvius export of three years of quarters is about 30 MB.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024


class ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(MeterMonthPeak)
class MeterMonthPeakAdmin(ReadOnly):
    list_display = ("device", "month", "peak_kw", "peak_ts", "closed", "read_at")
    list_filter = ("closed",)
    search_fields = ("device__device_id",)


class FluviusUploadForm(forms.Form):
    device = forms.ModelChoiceField(queryset=Device.objects.all())
    file = forms.FileField(help_text="Mijn Fluvius, Verbruik, Rapport downloaden: kwartiertotalen")


@admin.register(OperatorQuarter)
class OperatorQuarterAdmin(ReadOnly):
    list_display = ("device", "bucket", "kw", "import_kwh", "status", "ean", "imported_at")
    list_filter = ("status",)
    search_fields = ("device__device_id", "ean")
    date_hierarchy = "bucket"
    change_list_template = "admin/capacity/operatorquarter/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        upload = path(
            "import/",
            self.admin_site.admin_view(self.import_view),
            name="capacity_operatorquarter_import",
        )
        return [upload, *super().get_urls()]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("capacity.add_operatorquarter") and not (
            request.user.is_superuser
        ):
            return HttpResponse(status=403)
        form = FluviusUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            device = form.cleaned_data["device"]
            try:
                if upload.size > MAX_UPLOAD_BYTES:
                    raise FluviusFormatError("the file is larger than any export of three years")
                result = import_export(device, decode(upload.chunks()))
            except (FluviusFormatError, WrongEan) as exc:
                form.add_error("file", f"{upload.name}: {exc}")
            else:
                messages.success(request, f"{device.device_id}: {summary(result)}")
                return HttpResponseRedirect(reverse("admin:capacity_operatorquarter_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import a Mijn Fluvius quarter-hour export",
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/capacity/operatorquarter/import.html", context)
