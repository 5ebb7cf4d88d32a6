"""Store every series block of the devices (telemetry.series_blocks): once after the
upgrade that added them, so the first series request of each range reads stored blocks
instead of computing them. Batches and reads keep them from then on."""

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from telemetry import series_blocks
from telemetry.management import devices_named


class Command(BaseCommand):
    help = "Compute and store the series blocks of devices that do not have them yet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_ids", nargs="*", help="default: every device")

    def handle(self, *args: Any, device_ids: list[str], **options: Any) -> None:
        for device_pk, device_id in devices_named(device_ids).values_list("pk", "device_id"):
            stored = series_blocks.fill_device(device_pk)
            self.stdout.write(
                f"stored {stored} series block{'' if stored == 1 else 's'} of {device_id}"
            )
