"""``pair --host HOST`` (``manage.py hw_pair``, ``python -m edgeclient pair``): get an API
v2 token from a HomeWizard P1 meter.

The user name (``--name``, else HW_P1_USER_NAME, else ``local/p1platform-<host name>``)
is printed before the button is asked for: the meter revokes a name's earlier token
when that name pairs again, so each edge must pair under its own.
"""

from __future__ import annotations

import logging
import os
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from edgeclient.cli import CommandError, Lines
from edgeclient.config import data_dir_from_env
from edgeclient.homewizard import (
    ButtonNotPressed,
    HomeWizardClient,
    MeterConfig,
    MeterDeviceError,
    MeterError,
    MeterTimeout,
    MeterTLSError,
    MeterUnreachable,
    MeterWrongProduct,
    require_p1_meter,
    split_host,
)
from edgeclient.meter_tls import PinnedCertificate, display_fingerprint
from edgeclient.pairing import (
    USER_NAME_ENV,
    PairingTimeout,
    UserNameError,
    check_user_name,
    fetch_certificate,
    pair,
    user_name_from_env,
)

# What each error the HomeWizard API v2 documents for POST /api/user means for the person
# at the meter (docs/v2/error-handling.mdx and docs/v2/authorization.mdx in
# github:homewizard/api-documentation). "{name}" is the user name that was sent.
_BUG = "; this is a bug in p1platform or a firmware it does not know: please report it"
_DEVICE_ERRORS = {
    "user:no-storage": "the meter has no room for another user: remove one in the "
    "HomeWizard Energy app (Settings > Meters > Local API), then pair again",
    "user:invalid-prefix": "the meter refused the name {name!r}: it must start with local/",
    "user:name-empty": "the meter refused an empty name: give one with --name",
    "user:name-invalid": "the meter refused the characters in {name!r}: use a-z, 0-9, - and "
    "_ (--name or HW_P1_USER_NAME)",
    "user:name-too-long": "the meter refused {name!r} as too long: at most 40 characters "
    "after local/ (--name or HW_P1_USER_NAME)",
    "request:api-version-not-supported": "this meter's firmware has no API v2: use "
    "HW_P1_API=v1 (and enable the local API in the HomeWizard Energy app)",
    "request:invalid-json": "the meter could not parse the pairing request" + _BUG,
    "request:too-large": "the meter found the pairing request too large" + _BUG,
    "json:no-parameters-recognized": "the meter did not recognise the pairing request" + _BUG,
    "json:parameter-missing": "the meter missed a field of the pairing request" + _BUG,
    "json:parameter-invalid-type": "the meter refused a field's type in the pairing request" + _BUG,
    "json:parameter-not-exclusive": "the meter refused the pairing request's fields" + _BUG,
    "request:internal-server-error": "the meter failed internally for the whole wait: "
    "power-cycle it (unplug it for 10 s) and pair again",
}


HELP = "Pair with a HomeWizard P1 meter: pin its certificate and obtain an API v2 token."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--host", required=True, help="the meter's address (host[:port])")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait")
    parser.add_argument(
        "--name",
        help="the user name to pair as (local/ is added when missing); default: "
        f"${USER_NAME_ENV}, else local/p1platform-<host name>. Pairing again under a "
        "name revokes that name's earlier token",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between asks")
    parser.add_argument("--cert-out", type=Path, help="where to keep the pinned certificate")


def handle(options: dict[str, Any], out: Lines) -> int:
    """Pair and print the edge's settings; CommandError (exit 1) says what went wrong."""
    # httpx logs every request at INFO: noise between the lines the user must read.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    host = options["host"].strip()
    try:
        split_host(host)
    except ValueError as exc:
        raise CommandError(f"--host: {exc}") from None
    try:
        if options["name"] is not None:
            name = check_user_name(options["name"])
        else:
            name = user_name_from_env()
    except UserNameError as exc:
        where = "" if options["name"] is None else "--name: "
        raise CommandError(f"{where}{exc}") from None
    try:
        certificate = fetch_certificate(host)
    except MeterError as exc:
        raise CommandError(_explain(exc)) from exc
    out.write(f"Meter certificate: {certificate.name}")
    out.write(f"SHA-256 fingerprint: {display_fingerprint(certificate.sha256)}")
    out.write(f"Pairing as user {name} ({_name_origin(options['name'])}).")
    out.write(
        "Pairing again under this name makes the meter revoke the token it gave before: "
        "an edge still using that token is cut off. Give every edge its own name."
    )
    out.write(f"Press the button on the P1 meter now (waiting up to {options['timeout']:g} s)...")
    out.flush()
    try:
        pairing = pair(
            host,
            certificate,
            user_name=name,
            timeout_s=options["timeout"],
            interval_s=options["interval"],
        )
    except MeterError as exc:
        raise CommandError(_explain(exc, name)) from exc
    _check_product(out, host, certificate, pairing.token)

    serial = pairing.serial or "device"
    cert_out = options["cert_out"] or data_dir_from_env() / f"homewizard-{serial}.pem"
    try:
        cert_out.parent.mkdir(parents=True, exist_ok=True)
        cert_out.write_text(certificate.pem)
    except OSError as exc:
        raise CommandError(f"--cert-out: cannot write {cert_out}: {exc.strerror}") from exc
    out.write("Paired. Put these lines in the edge's environment:")
    out.write(f"HW_P1_HOST={host}")
    out.write("HW_P1_API=v2")
    out.write(f"{USER_NAME_ENV}={name}")
    out.write(f"HW_P1_TOKEN={pairing.token}")
    out.write(f"HW_P1_CERT_FILE={cert_out.resolve()}")
    out.write(f"HW_P1_CERT_SHA256={certificate.sha256}")
    return 0


def _check_product(out: Lines, host: str, certificate: PinnedCertificate, token: str) -> None:
    """A kWh meter pairs the same way; say so now rather than at run_edge's start."""
    config = MeterConfig(host=host, api="v2", token=token, pinned=certificate)
    try:
        with HomeWizardClient(config) as client:
            require_p1_meter(client, setting="--host")
    except MeterWrongProduct as exc:
        raise CommandError(str(exc)) from None
    except MeterError as exc:  # the token is good; run_edge asks again at start
        out.write(f"Could not ask the meter what it is ({exc}); run_edge will.")


def _name_origin(option: str | None) -> str:
    if option is not None:
        return "from --name"
    if os.environ.get(USER_NAME_ENV, "").strip():
        return f"from {USER_NAME_ENV}"
    return f"from this host's name; --name or {USER_NAME_ENV} chooses another"


def _device_hint(code: str | None) -> str | None:
    if code is None:
        return None
    if code in _DEVICE_ERRORS:
        return _DEVICE_ERRORS[code]
    # json:parameter-missing:<parameter> and friends name the field after a colon.
    scope = code.rsplit(":", 1)[0]
    return _DEVICE_ERRORS.get(scope) if code.startswith("json:") else None


def _explain(exc: MeterError, name: str | None = None) -> str:
    if isinstance(exc, PairingTimeout):
        if isinstance(exc.last, MeterDeviceError) and not isinstance(exc.last, ButtonNotPressed):
            return f"{exc}: {_device_hint(exc.last.code) or 'power-cycle it and pair again'}"
        return f"{exc}; press the button and run hw_pair again"
    if isinstance(exc, ButtonNotPressed):
        return f"{exc}: press the button on the meter"
    if isinstance(exc, MeterDeviceError) and (hint := _device_hint(exc.code)) is not None:
        return f"{exc}: {hint.format(name=name)}"
    if isinstance(exc, MeterDeviceError):
        return f"{exc}: the meter refused pairing with an error p1platform does not know"
    if isinstance(exc, MeterTimeout):
        return f"{exc}: is the meter on this network and powered?"
    if isinstance(exc, MeterUnreachable):
        return f"{exc}: check the address (a v1-only meter has no https: use HW_P1_API=v1)"
    if isinstance(exc, MeterTLSError):
        return f"{exc}: the device at this address does not speak TLS like a HomeWizard meter"
    return str(exc)
