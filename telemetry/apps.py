from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class TelemetryConfig(AppConfig):
    name = "telemetry"
    verbose_name = "Telemetry"

    def ready(self) -> None:
        from telemetry.models import DeviceToken
        from telemetry.tokens import drop_cached_lookup

        # Any change to a token (revocation above all) must reach the next request.
        post_save.connect(drop_cached_lookup, sender=DeviceToken, dispatch_uid="token-cache")
        post_delete.connect(drop_cached_lookup, sender=DeviceToken, dispatch_uid="token-cache")
