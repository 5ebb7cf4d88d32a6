from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    """Data out for the tools households already use: CSV export, /metrics, the MQTT
    publisher with Home Assistant discovery, and health alerts (docs/INTEGRATIONS.md)."""

    name = "integrations"
    verbose_name = "Integrations"

    def ready(self) -> None:
        from integrations.admin import add_export_action

        add_export_action()
