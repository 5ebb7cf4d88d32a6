from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from telemetry.models import Device


class Command(BaseCommand):
    help = "Register a P1 meter under a short public device id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_id")
        parser.add_argument("--name", default="")
        parser.add_argument("--timezone", default=None, help="IANA zone, default Europe/Brussels")
        parser.add_argument("--owner", default=None, help="username of the owning user")
        parser.add_argument("--price", default=None, help="capacity price in EUR/kW/year")

    def handle(
        self,
        *args: Any,
        device_id: str,
        name: str,
        timezone: str | None,
        owner: str | None,
        price: str | None,
        **options: Any,
    ) -> None:
        device = Device(device_id=device_id, name=name, capacity_price_eur_per_kw_year=price)
        if timezone:
            device.timezone = timezone
        if owner:
            try:
                device.owner = get_user_model().objects.get(username=owner)
            except get_user_model().DoesNotExist:
                raise CommandError(f"owner: no user named {owner!r}") from None
        try:
            device.full_clean()
        except ValidationError as exc:
            field, messages = next(iter(exc.message_dict.items()))
            raise CommandError(f"{field}: {' '.join(messages)}") from None
        device.save()
        self.stdout.write(f"created device {device.device_id} ({device.timezone})")
