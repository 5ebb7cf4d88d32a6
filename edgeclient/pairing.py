"""Pairing with a HomeWizard P1 meter: pin its certificate, then ask for a v2 token.

Trust on first use: the device certificate is fetched once without verification and
shown as a fingerprint; the token request itself already runs over a connection
verified against that certificate, so the token only ever goes to the pinned device.

User names: the meter keeps one token per user name, and "if the same name is reused, a
new token will be issued, and the previous one will be invalidated" (HomeWizard API v2
docs, docs/v2/authorization.mdx, github:homewizard/api-documentation). Each edge
therefore pairs under a name of its own, derived from its host name unless
HW_P1_USER_NAME (or ``hw_pair --name``) says otherwise.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edgeclient.homewizard import (
    CONNECT_TIMEOUT_S,
    DEVICE_NAME_PREFIX,
    V2_PORT,
    ButtonNotPressed,
    HomeWizardClient,
    MeterConfig,
    MeterDeviceError,
    MeterError,
    MeterProtocolError,
    MeterTimeout,
    MeterTLSError,
    MeterUnreachable,
    split_host,
)
from edgeclient.meter_tls import CertificateError, PinnedCertificate, fetch_leaf_certificate

USER_NAME_PREFIX = "local/"
USER_NAME_ENV = "HW_P1_USER_NAME"
_BASE_PART = "p1platform"
# The name every edge used before names were per host; still the fallback when the host
# name has nothing usable in it.
BASE_USER_NAME = USER_NAME_PREFIX + _BASE_PART
# The documented rule for POST /api/user: ^local\/[a-zA-Z0-9\-_/\\# ]{1,40}$
USER_NAME_MAX = 40
_USER_NAME = re.compile(r"local/[a-zA-Z0-9\-_/\\# ]{1,40}")
# What a host name part may keep; a dot or anything else becomes "-".
_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_DIGEST_CHARS = 6
PAIRING_TIMEOUT_S = 60.0
RETRY_INTERVAL_S = 1.0


class PairingTimeout(MeterError):
    """Nobody pressed the button (or the meter did not answer) before the deadline;
    ``last`` is the meter's last answer."""

    def __init__(self, message: str, last: MeterError | None = None) -> None:
        super().__init__(message)
        self.last = last


class UserNameError(ValueError):
    """A user name the meter would refuse (checked before anyone presses the button)."""


def default_user_name(hostname: str | None = None) -> str:
    """``local/p1platform-<host name>``, within what the meter accepts.

    Lower-cased, anything but a-z, 0-9, - and _ replaced by "-"; a name longer than the
    documented 40 characters keeps its start and ends in a digest of the whole host
    name, so two long host names that share a start still pair as different users.
    """
    host = (socket.gethostname() if hostname is None else hostname).strip().lower()
    part = _UNSAFE.sub("-", host).strip("-_")
    if not part:
        return BASE_USER_NAME
    room = USER_NAME_MAX - len(_BASE_PART) - 1  # 29 characters after "p1platform-"
    if len(part) > room:
        digest = hashlib.sha256(host.encode()).hexdigest()[:_DIGEST_CHARS]
        part = part[: room - _DIGEST_CHARS - 1].rstrip("-_") + "-" + digest
    return f"{BASE_USER_NAME}-{part}"


def check_user_name(name: str) -> str:
    """``name`` with the ``local/`` prefix added when missing; UserNameError if the meter
    would refuse it (the documented characters and length)."""
    name = name.strip()
    full = name if name.startswith(USER_NAME_PREFIX) else USER_NAME_PREFIX + name
    if full == USER_NAME_PREFIX:
        raise UserNameError("the name after local/ is empty")
    if len(full) - len(USER_NAME_PREFIX) > USER_NAME_MAX:
        raise UserNameError(
            f"{full!r} is too long: at most {USER_NAME_MAX} characters after local/"
        )
    if not _USER_NAME.fullmatch(full):
        raise UserNameError(
            f"{full!r} has characters the meter refuses: use a-z, A-Z, 0-9, -, _, /, \\, #"
            " and spaces"
        )
    return full


def user_name_from_env(
    environ: Mapping[str, str] = os.environ, *, hostname: str | None = None
) -> str:
    """HW_P1_USER_NAME when set (checked), else the name derived from the host name."""
    raw = (environ.get(USER_NAME_ENV) or "").strip()
    if not raw:
        return default_user_name(hostname)
    try:
        return check_user_name(raw)
    except UserNameError as exc:
        raise UserNameError(f"{USER_NAME_ENV}: {exc}") from None


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
    user_name: str | None = None,
    timeout_s: float = PAIRING_TIMEOUT_S,
    interval_s: float = RETRY_INTERVAL_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[MeterError], None] | None = None,
) -> Pairing:
    """Ask for a token until the button is pressed or ``timeout_s`` passes.

    ``user_name`` defaults to ``default_user_name()`` (this host's). Button-not-pressed,
    timeouts, dropped connections and the meter's own internal errors (HTTP 5xx) are
    retried within the window; every other device answer (``user:no-storage``, a bad
    name, a TLS failure) ends it. Raises PairingTimeout or the MeterError that ended it.
    Pairing under a name the meter already knows revokes that name's earlier token.
    """
    user_name = default_user_name() if user_name is None else user_name
    deadline = clock() + timeout_s
    config = MeterConfig(host=host, api="v2", pinned=certificate)
    with HomeWizardClient(config) as client:
        while True:
            try:
                token = client.create_user(user_name)
                return Pairing(host, token, certificate, user_name)
            except (ButtonNotPressed, MeterTimeout, MeterUnreachable, MeterDeviceError) as exc:
                if isinstance(exc, MeterDeviceError) and not _retried(exc):
                    raise
                if clock() + interval_s > deadline:
                    raise PairingTimeout(_timeout_message(host, timeout_s, exc), exc) from exc
                if on_retry is not None:
                    on_retry(exc)
            sleep(interval_s)


def _retried(exc: MeterDeviceError) -> bool:
    # user:creation-not-enabled is the documented "press the button"; a 5xx
    # (request:internal-server-error) is the meter's own hiccup, worth asking again.
    return isinstance(exc, ButtonNotPressed) or exc.status >= 500


def _timeout_message(host: str, timeout_s: float, last: MeterError) -> str:
    if isinstance(last, ButtonNotPressed):
        return f"{host}: the button was not pressed within {timeout_s:g} s"
    if isinstance(last, MeterDeviceError):
        return f"{host}: the meter kept answering {last.code or last.status} for {timeout_s:g} s"
    return f"{host}: no pairing answer within {timeout_s:g} s (last: {last})"
