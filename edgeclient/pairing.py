"""Pairing with a HomeWizard P1 meter: pin its certificate, then ask for a v2 token.

Trust on first use: the device certificate is fetched once without verification and
shown as a fingerprint; the token request itself already runs over a connection
verified against that certificate, so the token only ever goes to the pinned device.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from edgeclient.homewizard import (
    CONNECT_TIMEOUT_S,
    DEVICE_NAME_PREFIX,
    V2_PORT,
    ButtonNotPressed,
    HomeWizardClient,
    MeterConfig,
    MeterError,
    MeterProtocolError,
    MeterTimeout,
    MeterTLSError,
    MeterUnreachable,
    split_host,
)
from edgeclient.meter_tls import CertificateError, PinnedCertificate, fetch_leaf_certificate

DEFAULT_USER_NAME = "local/p1platform"
PAIRING_TIMEOUT_S = 60.0
RETRY_INTERVAL_S = 1.0


class PairingTimeout(MeterError):
    """Nobody pressed the button (or the meter did not answer) before the deadline."""


@dataclass(frozen=True)
class Pairing:
    host: str
    token: str
    certificate: PinnedCertificate
    user_name: str

    @property
    def serial(self) -> str | None:
        name = self.certificate.name
        return name.rsplit("/", 1)[-1] if name.startswith(DEVICE_NAME_PREFIX) else None


def fetch_certificate(host: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> PinnedCertificate:
    """The certificate the meter presents, to show and pin (never used to send data)."""
    hostname, port = split_host(host)
    try:
        return fetch_leaf_certificate(hostname, port or V2_PORT, timeout_s)
    except TimeoutError as exc:
        raise MeterTimeout(f"{host}: no TLS answer within {timeout_s:g} s") from exc
    except ssl.SSLError as exc:
        raise MeterTLSError(f"{host}: TLS handshake failed: {exc}") from exc
    except CertificateError as exc:
        raise MeterProtocolError(f"{host}: unusable device certificate: {exc}") from exc
    except OSError as exc:
        raise MeterUnreachable(f"{host}: {exc.strerror or exc}") from exc


def pair(
    host: str,
    certificate: PinnedCertificate,
    *,
    user_name: str = DEFAULT_USER_NAME,
    timeout_s: float = PAIRING_TIMEOUT_S,
    interval_s: float = RETRY_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[MeterError], None] | None = None,
) -> Pairing:
    """Ask for a token until the button is pressed or ``timeout_s`` passes.

    Button-not-pressed, timeouts and dropped connections are retried within the window;
    every other device answer (``user:no-storage``, a bad name, a TLS failure) ends it.
    Raises PairingTimeout or the MeterError that ended it.
    """
    deadline = clock() + timeout_s
    config = MeterConfig(host=host, api="v2", pinned=certificate)
    with HomeWizardClient(config) as client:
        while True:
            try:
                token = client.create_user(user_name)
                return Pairing(host, token, certificate, user_name)
            except (ButtonNotPressed, MeterTimeout, MeterUnreachable) as exc:
                if clock() + interval_s > deadline:
                    raise PairingTimeout(_timeout_message(host, timeout_s, exc)) from exc
                if on_retry is not None:
                    on_retry(exc)
            sleep(interval_s)


def _timeout_message(host: str, timeout_s: float, last: MeterError) -> str:
    if isinstance(last, ButtonNotPressed):
        return f"{host}: the button was not pressed within {timeout_s:g} s"
    return f"{host}: no pairing answer within {timeout_s:g} s (last: {last})"
