"""Admin: devices (owner, latest samples, quarantine) and their tokens (issue, revoke).

Pages stay within the site's Content-Security-Policy: no inline script or style; the
token page's copy button is a static script. Times are shown on the device's own clock
with its zone (the admin's zone is UTC, which nobody reads a meter by), in short columns
so the lists fit a 1280 px screen beside the admin's navigation.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from telemetry.models import Device, DeviceToken, IngestRejection, RegisterBreak, Sample
from telemetry.tokens import mint

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldOpts, _FieldsetSpec

LATEST_SAMPLES = 50
QUARANTINE_SHOWN = 50
BREAKS_SHOWN = 50
# What the latest-samples table shows: enough to recognise a reading at a glance
# (field, column heading).
SAMPLE_COLUMNS = (
    ("ts", "time"),
    ("power_w", "W"),
    ("energy_import_kwh", "import kWh"),
    ("energy_export_kwh", "export kWh"),
    ("tariff", "tariff"),
    ("average_power_15m_w", "15 min avg W"),
    ("monthly_power_peak_w", "month peak W"),
    ("gas_m3", "gas m³"),
)
LOCAL_DATE = "%Y-%m-%d"
LOCAL_TIME = "%H:%M:%S %Z"
# A token's times: to the minute is enough to audit it, and keeps the list narrow.
TO_THE_MINUTE = "%H:%M %Z"


def local_time(moment: datetime | None, timezone: str) -> str | None:
    """A moment on a device's clock, to the second (readings are seconds apart), with
    the zone's abbreviation (CET, CEST: which side of a clock change it is on)."""
    if moment is None:
        return None
    return moment.astimezone(ZoneInfo(timezone)).strftime(f"{LOCAL_DATE} {LOCAL_TIME}")


def local_time_cell(
    moment: datetime | None, timezone: str, time_format: str = LOCAL_TIME
) -> SafeString | None:
    """local_time for a list column: it wraps between the date and the time, never
    inside either, so a narrow column stays readable."""
    if moment is None:
        return None
    local = moment.astimezone(ZoneInfo(timezone))
    return format_html(
        '<span class="nowrap">{}</span> <span class="nowrap">{}</span>',
        local.strftime(LOCAL_DATE),
        local.strftime(time_format),
    )


class TokenTimes:
    """A token's columns for the list and the device page's inline: a prefix of fixed
    width (it is random) and the times on its device's clock."""

    @admin.display(description="prefix", ordering="prefix")
    def prefix_code(self, obj: DeviceToken) -> SafeString:
        return format_html("<code>{}</code>", obj.prefix)

    @admin.display(description="scopes", ordering="scopes")
    def scope_list(self, obj: DeviceToken) -> str:
        return ", ".join(obj.scopes.split(","))  # a narrow column may wrap between them

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: DeviceToken) -> SafeString | None:
        return local_time_cell(obj.created_at, obj.device.timezone, TO_THE_MINUTE)

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj: DeviceToken) -> SafeString | None:
        return local_time_cell(obj.last_used_at, obj.device.timezone, TO_THE_MINUTE)

    @admin.display(description="revoked", ordering="revoked_at")
    def revoked(self, obj: DeviceToken) -> SafeString | None:
        return local_time_cell(obj.revoked_at, obj.device.timezone, TO_THE_MINUTE)


class DeviceTokenInline(TokenTimes, admin.TabularInline):
    model = DeviceToken
    extra = 0
    can_delete = False
    fields = ("prefix_code", "label", "scope_list", "created", "last_used", "revoked")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Device | None = None) -> bool:
        return False


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = (
        "device_id",
        "name",
        "owner",
        # The zone is in every time shown (and in the filter), not a column of its own.
        "last_sample_at",
        "capacity_price",
    )
    list_filter = ("timezone", ("owner", admin.RelatedOnlyFieldListFilter))
    search_fields = ("device_id", "name", "owner__username")
    autocomplete_fields = ("owner",)
    inlines = [DeviceTokenInline]
    readonly_fields = ("issue_token_link", "latest_samples", "register_breaks", "quarantine")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Device]:
        # One index lookup per row on (device, ts): the newest sample's time.
        newest = Sample.objects.filter(device=OuterRef("pk")).order_by("-ts").values("ts")[:1]
        return (
            super()
            .get_queryset(request)
            .select_related("owner")
            .annotate(last_sample_ts=Subquery(newest))
        )

    def get_fieldsets(self, request: HttpRequest, obj: Device | None = None) -> _FieldsetSpec:
        main: tuple[str | None, _FieldOpts] = (
            None,
            {
                "fields": (
                    "device_id",
                    "name",
                    "owner",
                    "timezone",
                    "network_area",
                    "social_tariff",
                    "capacity_price_eur_per_kw_year",
                    "ean",
                )
            },
        )
        if obj is None:
            return [main]
        return [
            main,
            ("Tokens", {"fields": ("issue_token_link",)}),
            (
                f"Latest {LATEST_SAMPLES} samples (read-only; times in {obj.timezone})",
                {"fields": ("latest_samples",)},
            ),
            (
                "Register breaks: meter swaps and other steps not counted as energy (read-only)",
                {"fields": ("register_breaks",)},
            ),
            ("Quarantine: samples the server refused (read-only)", {"fields": ("quarantine",)}),
        ]

    @admin.display(description="last sample", ordering="last_sample_ts")
    def last_sample_at(self, obj: Device) -> SafeString | None:
        return local_time_cell(getattr(obj, "last_sample_ts", None), obj.timezone)

    @admin.display(description="€/kW/year", ordering="capacity_price_eur_per_kw_year")
    def capacity_price(self, obj: Device) -> object:
        return obj.capacity_price_eur_per_kw_year

    @admin.display(description="issue")
    def issue_token_link(self, obj: Device) -> SafeString:
        url = reverse("admin:telemetry_devicetoken_add") + f"?device={obj.pk}"
        return format_html('<a class="addlink" href="{}">Issue a new token</a>', url)

    @admin.display(description="samples")
    def latest_samples(self, obj: Device) -> SafeString:
        found = (
            Sample.objects.filter(device=obj)
            .order_by("-ts")
            .values_list(*(field for field, _heading in SAMPLE_COLUMNS))[:LATEST_SAMPLES]
        )
        rows = [
            [local_time(v, obj.timezone) if isinstance(v, datetime) else v for v in row]
            for row in found
        ]
        return mark_safe(  # noqa: S308 - the template escapes every value
            render_to_string(
                "admin/telemetry/device/latest_samples.html",
                {"headings": [heading for _field, heading in SAMPLE_COLUMNS], "rows": rows},
            )
        )

    @admin.display(description="breaks")
    def register_breaks(self, obj: Device) -> SafeString:
        found = RegisterBreak.objects.filter(device=obj).order_by("-ts")
        url = reverse("admin:telemetry_registerbreak_changelist") + f"?device__id__exact={obj.pk}"
        return mark_safe(  # noqa: S308 - the template escapes every value
            render_to_string(
                "admin/telemetry/device/register_breaks.html",
                {
                    "breaks": found[:BREAKS_SHOWN],
                    "total": found.count(),
                    "all_url": url,
                    "timezone": obj.timezone,
                },
            )
        )

    @admin.display(description="rejections")
    def quarantine(self, obj: Device) -> SafeString:
        rejections = IngestRejection.objects.filter(device=obj).order_by("-received_at", "-id")
        url = reverse("admin:telemetry_ingestrejection_changelist") + f"?device__id__exact={obj.pk}"
        return mark_safe(  # noqa: S308 - the template escapes every value
            render_to_string(
                "admin/telemetry/device/quarantine.html",
                {
                    "rejections": rejections[:QUARANTINE_SHOWN],
                    "total": rejections.count(),
                    "all_url": url,
                    "timezone": obj.timezone,
                },
            )
        )


class IssueTokenForm(forms.ModelForm):
    scope_choices = forms.MultipleChoiceField(
        choices=[(s, s) for s in DeviceToken.SCOPES],
        widget=forms.CheckboxSelectMultiple,
        initial=[DeviceToken.SCOPE_INGEST],
        label="Scopes",
        help_text="ingest: POST /v1/ingest (the edge). read: the read API (dashboards, scripts).",
    )

    class Meta:
        model = DeviceToken
        fields = ("device", "label")


@admin.register(DeviceToken)
class DeviceTokenAdmin(TokenTimes, admin.ModelAdmin):
    # Newest first; when each was created is on its page and in the device's inline
    # (the list has no room for a third time beside the filters at 1280 px).
    list_display = ("prefix_code", "device", "label", "scope_list", "last_used", "revoked")
    list_filter = ("scopes", "provisioned", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "device__device_id", "label")
    list_select_related = ("device",)
    actions = ["revoke"]
    # provisioned: shown, never editable (editable=False): only DEVICE_TOKENS sets it.
    readonly_fields = ("prefix", "scopes", "provisioned", "created", "last_used", "revoked")

    # Django passes ``change`` by keyword: it arrives in kwargs and goes on to super().
    def get_form(  # type: ignore[override]
        self, request: HttpRequest, obj: DeviceToken | None = None, **kwargs: Any
    ) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = IssueTokenForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: DeviceToken | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("device", "label", "scope_choices")
        return ("device", "label", *self.readonly_fields)

    def get_readonly_fields(
        self, request: HttpRequest, obj: DeviceToken | None = None
    ) -> tuple[str, ...]:
        if obj is None:
            return ()
        return ("device", *self.readonly_fields)

    def save_model(
        self, request: HttpRequest, obj: DeviceToken, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            return super().save_model(request, obj, form, change)
        # Kept on the instance for response_add only; never stored, logged or messaged.
        obj._raw_token = mint(obj, form.cleaned_data["scope_choices"])
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: DeviceToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        """The raw token, once: rendered into this answer, never into a redirect or a
        message (those would carry it in a cookie or the session)."""
        raw = getattr(obj, "_raw_token", None)
        if raw is None or "_popup" in request.POST:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "token": obj,
            "raw_token": raw,
            "title": "Token issued",
            "device_url": reverse("admin:telemetry_device_change", args=[obj.device_id]),
        }
        response = TemplateResponse(request, "admin/telemetry/devicetoken/issued.html", context)
        response["Cache-Control"] = "no-store"
        return response

    def has_delete_permission(self, request: HttpRequest, obj: DeviceToken | None = None) -> bool:
        # Revoke instead: a revoked token keeps its audit trail (created, last used).
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[DeviceToken]) -> None:
        # A token DEVICE_TOKENS revoked is included: the admin's revocation then wins
        # when the list names it again.
        active = list(queryset.filter(Q(revoked_at__isnull=True) | Q(revoked_by_list=True)))
        for token in active:
            token.revoke()  # one by one: each save drops the token's cached lookup
        count = len(active)
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


@admin.register(IngestRejection)
class IngestRejectionAdmin(admin.ModelAdmin):
    """Read-only: the ingest path writes these, nobody edits them."""

    list_display = ("received_at", "device", "index", "reason")
    list_filter = (("device", admin.RelatedOnlyFieldListFilter),)
    list_select_related = ("device",)
    search_fields = ("device__device_id", "reason")
    date_hierarchy = "received_at"
    fields = ("device", "received_at", "index", "reason", "sample")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: IngestRejection | None = None
    ) -> bool:
        return False


@admin.register(RegisterBreak)
class RegisterBreakAdmin(admin.ModelAdmin):
    """Read-only: derived from the samples by ingest and rebuild_capacity."""

    list_display = (
        "ts",
        "device",
        "kind",
        "prev_ts",
        "prev_import_kwh",
        "import_kwh",
        "prev_export_kwh",
        "export_kwh",
    )
    list_filter = ("kind", ("device", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("device",)
    search_fields = ("device__device_id",)
    date_hierarchy = "ts"
    fields = list_display
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RegisterBreak | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: RegisterBreak | None = None) -> bool:
        # The samples decide: a deleted break would come back at the next rebuild.
        return False
