from django.apps import AppConfig


class PeakGuardConfig(AppConfig):
    name = "peakguard"
    verbose_name = "Peak guard"

    def ready(self) -> None:
        from peakguard.delivery import retry_delays
        from peakguard.evaluate import on_samples_ingested
        from telemetry.signals import samples_ingested

        retry_delays()  # a bad PEAKGUARD_RETRY_DELAYS_S stops the process at start-up
        samples_ingested.connect(on_samples_ingested, dispatch_uid="peakguard.check")
