from django.apps import AppConfig


class CapacityConfig(AppConfig):
    name = "capacity"
    verbose_name = "Capacity tariff"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from capacity.materialize import on_device_saved, on_samples_ingested
        from telemetry.models import Device
        from telemetry.signals import samples_ingested

        samples_ingested.connect(on_samples_ingested, dispatch_uid="capacity.quarters")
        post_save.connect(on_device_saved, sender=Device, dispatch_uid="capacity.timezone")
