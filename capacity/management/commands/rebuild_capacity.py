from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from capacity.materialize import rebuild
from telemetry.management import devices_named
from telemetry.models import RegisterBreak


class Command(BaseCommand):
    help = (
        "Recompute the register breaks (meter swaps), quarter power and monthly peaks of "
        "devices from their stored samples (after a bulk load outside ingest)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_ids", nargs="*", help="default: every device")

    def handle(self, *args: Any, device_ids: list[str], **options: Any) -> None:
        for device in devices_named(device_ids):
            rebuild(device.pk)
            breaks = RegisterBreak.objects.filter(device=device).count()
            self.stdout.write(
                f"rebuilt capacity quarters of {device.device_id} "
                f"({breaks} register break{'' if breaks == 1 else 's'})"
            )
