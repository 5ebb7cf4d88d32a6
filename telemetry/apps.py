from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class TelemetryConfig(AppConfig):
    name = "telemetry"
    verbose_name = "Telemetry"

    def ready(self) -> None:
        from telemetry.models import DeviceToken
        from telemetry.token_cache import bump_generation

        # Any change to a token (revocation above all) must reach the next request.
        post_save.connect(bump_generation, sender=DeviceToken, dispatch_uid="token-cache")
        post_delete.connect(bump_generation, sender=DeviceToken, dispatch_uid="token-cache")
