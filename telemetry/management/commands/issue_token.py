from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from telemetry.models import Device
from telemetry.tokens import InvalidScopes, issue_token


class Command(BaseCommand):
    help = "Issue a device token. The token is printed once, alone on the last line."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_id")
        parser.add_argument("--scopes", default="ingest", help="comma-separated: ingest,read")
        parser.add_argument("--label", default="")

    def handle(self, *args: Any, device_id: str, scopes: str, label: str, **options: Any) -> None:
        try:
            device = Device.objects.get(device_id=device_id)
        except Device.DoesNotExist:
            raise CommandError(f"device_id: no device {device_id!r}") from None
        try:
            token, raw = issue_token(device, scopes, label=label)
        except InvalidScopes as exc:
            raise CommandError(f"--scopes: {exc}") from None
        self.stderr.write(
            f"token {token.prefix}… for {device.device_id} with scopes {token.scopes}; "
            "store it now, it cannot be shown again:"
        )
        self.stdout.write(raw)
