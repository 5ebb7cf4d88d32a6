from django.apps import AppConfig


class CapacityConfig(AppConfig):
    name = "capacity"
    verbose_name = "Capacity tariff"

    def ready(self) -> None:
        from capacity.materialize import on_samples_ingested
        from telemetry.signals import samples_ingested

        samples_ingested.connect(on_samples_ingested, dispatch_uid="capacity.quarters")
