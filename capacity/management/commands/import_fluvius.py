from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from capacity.fluvius import (
    FluviusFormatError,
    WrongEan,
    decode,
    import_export,
    parse_export,
    summary,
)
from telemetry.models import Device


class Command(BaseCommand):
    help = (
        "Import a Mijn Fluvius quarter-hour export (kwartiertotalen, CSV) as the grid "
        "operator's quarters of a device. A second import of the same file changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="the exported CSV file")
        parser.add_argument(
            "--device", help="the device's device_id (default: the device with the file's EAN)"
        )

    def handle(self, *args: Any, file: Path, device: str | None, **options: Any) -> None:
        try:
            text = decode(file.read_bytes())
        except OSError as exc:
            raise CommandError(f"{file}: {exc.strerror or exc}") from None
        except FluviusFormatError as exc:
            raise CommandError(f"{file}: {exc}") from None
        try:
            target = _device(device, text)
            result = import_export(target, text)
        except (FluviusFormatError, WrongEan) as exc:
            raise CommandError(f"{file}: {exc}") from None
        self.stdout.write(f"{target.device_id}: {summary(result)}")


def _device(device_id: str | None, text: str) -> Device:
    if device_id is not None:
        found = Device.objects.filter(device_id=device_id).first()
        if found is None:
            raise CommandError(f"--device: no device {device_id}")
        return found
    ean = parse_export(text).ean
    found = Device.objects.filter(ean=ean).first()
    if found is None:
        raise CommandError(f"no device has EAN {ean}: name one with --device")
    return found
