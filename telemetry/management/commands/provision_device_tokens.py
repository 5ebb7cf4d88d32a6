from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from telemetry.provisioning import ProvisioningError, provision_device_tokens


class Command(BaseCommand):
    help = (
        "Create the devices and tokens of DEVICE_TOKENS (device_id:token,...) and revoke "
        "the provisioned tokens that left it (restoring those it revoked that are back); run "
        "at every start."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            done = provision_device_tokens(settings.DEVICE_TOKENS)
        except ProvisioningError as exc:
            raise CommandError(str(exc)) from None
        created = ", ".join(done.devices_created) or "none"
        self.stdout.write(
            f"DEVICE_TOKENS: {done.tokens_created} token(s) created, {done.tokens_kept} kept, "
            f"{done.tokens_revoked} revoked, {done.tokens_restored} restored; "
            f"devices created: {created}"
        )
        if done.revoked_in_admin:
            self.stderr.write(
                f"DEVICE_TOKENS: {done.revoked_in_admin} listed token(s) were revoked in the "
                "admin and stay revoked; give those devices new tokens"
            )
