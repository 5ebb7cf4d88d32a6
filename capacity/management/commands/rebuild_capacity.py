from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from capacity.materialize import rebuild
from telemetry.models import Device, RegisterBreak


class Command(BaseCommand):
    help = (
        "Recompute the register breaks (meter swaps), quarter power and monthly peaks of "
        "devices from their stored samples (after a bulk load outside ingest)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_ids", nargs="*", help="default: every device")

    def handle(self, *args: Any, device_ids: list[str], **options: Any) -> None:
        devices = Device.objects.all()
        if device_ids:
            devices = devices.filter(device_id__in=device_ids)
            missing = set(device_ids) - set(devices.values_list("device_id", flat=True))
            if missing:
                raise CommandError(f"device_ids: no device {', '.join(sorted(missing))}")
        for device in devices:
            rebuild(device.pk)
            breaks = RegisterBreak.objects.filter(device=device).count()
            self.stdout.write(
                f"rebuilt capacity quarters of {device.device_id} "
                f"({breaks} register break{'' if breaks == 1 else 's'})"
            )
