"""``manage.py hw_pair --host HOST``: get an API v2 token from a HomeWizard P1 meter."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from edgeclient.homewizard import (
    ButtonNotPressed,
    MeterDeviceError,
    MeterError,
    MeterTimeout,
    MeterTLSError,
    MeterUnreachable,
    split_host,
)
from edgeclient.meter_tls import display_fingerprint
from edgeclient.pairing import DEFAULT_USER_NAME, PairingTimeout, fetch_certificate, pair

# What each documented device error means for the person at the meter.
_DEVICE_ERRORS = {
    "user:no-storage": "the meter has no room for another user: remove one in the "
    "HomeWizard Energy app (Settings > Meters > Local API), then pair again",
    "user:invalid-prefix": "the user name must start with local/",
    "user:name-invalid": "the user name has characters the meter refuses (use a-z, 0-9, -, _)",
    "user:name-too-long": "the user name is too long (at most 40 characters after local/)",
    "request:api-version-not-supported": "this meter's firmware has no API v2: use "
    "HW_P1_API=v1 (and enable the local API in the HomeWizard Energy app)",
}


class Command(BaseCommand):
    help = "Pair with a HomeWizard P1 meter: pin its certificate and obtain an API v2 token."
    # The edge runs without the server's apps: the URL check would import DRF.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", required=True, help="the meter's address (host[:port])")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
        parser.add_argument("--name", default=DEFAULT_USER_NAME, help="local/<name> to register")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between asks")
        parser.add_argument("--cert-out", type=Path, help="where to keep the pinned certificate")

    def handle(self, *args: Any, **options: Any) -> None:
        # httpx logs every request at INFO: noise between the lines the user must read.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        host = options["host"].strip()
        try:
            split_host(host)
        except ValueError as exc:
            raise CommandError(f"--host: {exc}") from None
        name = (
            options["name"] if options["name"].startswith("local/") else "local/" + options["name"]
        )
        try:
            certificate = fetch_certificate(host)
        except MeterError as exc:
            raise CommandError(_explain(exc)) from exc
        self.stdout.write(f"Meter certificate: {certificate.name}")
        self.stdout.write(f"SHA-256 fingerprint: {display_fingerprint(certificate.sha256)}")
        self.stdout.write(
            f"Press the button on the P1 meter now (waiting up to {options['timeout']:g} s)..."
        )
        self.stdout.flush()
        try:
            pairing = pair(
                host,
                certificate,
                user_name=name,
                timeout_s=options["timeout"],
                interval_s=options["interval"],
            )
        except MeterError as exc:
            raise CommandError(_explain(exc)) from exc

        serial = pairing.serial or "device"
        cert_out = options["cert_out"] or Path(settings.DATA_DIR) / f"homewizard-{serial}.pem"
        try:
            cert_out.parent.mkdir(parents=True, exist_ok=True)
            cert_out.write_text(certificate.pem)
        except OSError as exc:
            raise CommandError(f"--cert-out: cannot write {cert_out}: {exc.strerror}") from exc
        self.stdout.write("Paired. Put these lines in the edge's environment:")
        self.stdout.write(f"HW_P1_HOST={host}")
        self.stdout.write("HW_P1_API=v2")
        self.stdout.write(f"HW_P1_TOKEN={pairing.token}")
        self.stdout.write(f"HW_P1_CERT_FILE={cert_out.resolve()}")
        self.stdout.write(f"HW_P1_CERT_SHA256={certificate.sha256}")


def _explain(exc: MeterError) -> str:
    if isinstance(exc, PairingTimeout):
        return f"{exc}; press the button and run hw_pair again"
    if isinstance(exc, ButtonNotPressed):
        return f"{exc}: press the button on the meter"
    if isinstance(exc, MeterDeviceError) and exc.code in _DEVICE_ERRORS:
        return f"{exc}: {_DEVICE_ERRORS[exc.code]}"
    if isinstance(exc, MeterTimeout):
        return f"{exc}: is the meter on this network and powered?"
    if isinstance(exc, MeterUnreachable):
        return f"{exc}: check the address (a v1-only meter has no https: use HW_P1_API=v1)"
    if isinstance(exc, MeterTLSError):
        return f"{exc}: the device at this address does not speak TLS like a HomeWizard meter"
    return str(exc)
