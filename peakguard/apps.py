from django.apps import AppConfig


class PeakGuardConfig(AppConfig):
    name = "peakguard"
    verbose_name = "Peak guard"

    def ready(self) -> None:
        from peakguard.delivery import retry_delays

        retry_delays()  # a bad PEAKGUARD_RETRY_DELAYS_S stops the process at start-up
