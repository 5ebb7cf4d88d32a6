from django import forms
from django.contrib import admin, messages

from telemetry.models import Device, DeviceToken
from telemetry.tokens import mint


class DeviceTokenInline(admin.TabularInline):
    model = DeviceToken
    extra = 0
    can_delete = False
    fields = ("prefix", "label", "scopes", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("device_id", "name", "owner", "timezone", "capacity_price_eur_per_kw_year")
    list_filter = ("timezone",)
    search_fields = ("device_id", "name", "owner__username")
    autocomplete_fields = ("owner",)
    inlines = [DeviceTokenInline]


class IssueTokenForm(forms.ModelForm):
    scope_choices = forms.MultipleChoiceField(
        choices=[(s, s) for s in DeviceToken.SCOPES],
        widget=forms.CheckboxSelectMultiple,
        initial=[DeviceToken.SCOPE_INGEST],
        label="Scopes",
    )

    class Meta:
        model = DeviceToken
        fields = ("device", "label")


@admin.register(DeviceToken)
class DeviceTokenAdmin(admin.ModelAdmin):
    list_display = (
        "prefix",
        "device",
        "label",
        "scopes",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("scopes", "revoked_at")
    search_fields = ("prefix", "device__device_id", "label")
    actions = ["revoke"]
    readonly_fields = ("prefix", "scopes", "created_at", "last_used_at", "revoked_at")

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = IssueTokenForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("device", "label", "scope_choices")
        return ("device", "label", *self.readonly_fields)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("device", *self.readonly_fields)

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        raw = mint(obj, form.cleaned_data["scope_choices"])
        super().save_model(request, obj, form, change)
        messages.warning(
            request,
            f"New token for {obj.device}: {raw} — copy it now, it will not be shown again.",
        )

    def has_delete_permission(self, request, obj=None):
        # Revoke instead: a revoked token keeps its audit trail (created, last used).
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        active = list(queryset.filter(revoked_at__isnull=True))
        for token in active:
            token.revoke()  # one by one: each save drops the token's cached lookup
        count = len(active)
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
