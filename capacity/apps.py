from django.apps import AppConfig


class CapacityConfig(AppConfig):
    name = "capacity"
    verbose_name = "Capacity tariff"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from capacity.materialize import on_device_saved
        from telemetry.models import Device

        post_save.connect(on_device_saved, sender=Device, dispatch_uid="capacity.timezone")
