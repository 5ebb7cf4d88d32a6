"""TLS trust for the meter's v2 API: the HomeWizard CA, or the certificate pinned at pairing.

What the real devices present (sources cited where each rule is applied below):

- The HomeWizard CA ("Appliance Access CA", RSA 2048, sha256WithRSA) is an X.509
  *version 1* certificate without any extension: no basicConstraints, no keyUsage, no
  key identifiers. HomeWizard publishes it (api-documentation.homewizard.com
  /homewizard-ca-cert.pem, docs/v2/authorization.mdx "SSL Certificate Validation") and
  the official client ships the same PEM (github:homewizard/python-homewizard-energy
  homewizard_energy/v2/cacert.py; SHA-256 4E:C2:77:E6:...:AC:68:00:03).
- The device certificate names the device ``appliance/p1dongle/<serial>`` in its
  subject common name; some devices also carry a DNS subjectAltName that starts with the
  serial (github:homewizard/api-documentation issue #241: subject
  ``CN=appliance/p1dongle/5c2fafaabbcc``, ``subjectAltName (('DNS', '5c2fafaabbcc...``,
  serialNumber ``5C2FAFAABBCC``, valid 2025-01-01 to 2049-12-31).

Two consequences for Python's ssl module, both shown by tests/edge/test_meter_tls.py:
Python 3.13 puts VERIFY_X509_STRICT in ``create_default_context()``, and OpenSSL's strict
mode refuses the v1 CA ("invalid CA certificate"); and OpenSSL's host name check ignores
the common name as soon as a subjectAltName exists, while a name with slashes is no DNS
name anyway. So the contexts here verify the chain (CERT_REQUIRED, never CERT_NONE) with
Python's host name check off, and check the device themselves: every socket they make
runs the identity (CA mode) or fingerprint (pinned mode) check inside the handshake,
before the caller can send a byte, so no request (and no token) reaches another device.

The only unverified fetch is ``fetch_leaf_certificate``, used by pairing to show a
fingerprint (trust on first use) and never with credentials.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEVICE_NAME_PREFIX = "appliance/p1dongle/"
_CN_OID = bytes.fromhex("550403")  # 2.5.4.3 commonName


class CertificateError(ValueError):
    """A PEM file or fingerprint that cannot be used as a pin."""


class DeviceIdentityError(ssl.SSLCertVerificationError):
    """The certificate verified, but it is not the configured device's (or not the pin)."""


@dataclass(frozen=True)
class PinnedCertificate:
    pem: str
    sha256: str  # lowercase hex of the DER certificate, no separators
    name: str  # the subject common name the device presents

    @classmethod
    def from_pem(cls, pem: str) -> PinnedCertificate:
        try:
            der = ssl.PEM_cert_to_DER_cert(pem.strip() + "\n")
        except ValueError as exc:
            raise CertificateError("not a PEM certificate") from exc
        return cls(
            pem=ssl.DER_cert_to_PEM_cert(der), sha256=fingerprint(der), name=common_name(der)
        )

    @classmethod
    def load(cls, path: Path) -> PinnedCertificate:
        try:
            return cls.from_pem(path.read_text())
        except OSError as exc:
            raise CertificateError(f"cannot read {path}: {exc.strerror}") from exc


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def parse_fingerprint(text: str) -> str:
    """Accepts ``AB:CD:...``, spaces, any case; returns lowercase hex."""
    cleaned = "".join(ch for ch in text.lower() if ch not in ": ")
    if len(cleaned) != 64 or any(ch not in "0123456789abcdef" for ch in cleaned):
        raise CertificateError("expected a SHA-256 fingerprint (64 hex digits)")
    return cleaned


def display_fingerprint(sha256: str) -> str:
    return ":".join(sha256[i : i + 2] for i in range(0, len(sha256), 2)).upper()


def device_name(serial: str) -> str:
    """The identity HomeWizard documents for a P1 meter: ``appliance/p1dongle/<serial>``."""
    return DEVICE_NAME_PREFIX + serial.lower()


def ca_context(ca_file: Path, serial: str) -> ssl.SSLContext:
    """Trust the HomeWizard CA in ``ca_file`` only, and accept only device ``serial``."""
    context = _DeviceContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED
    context.load_verify_locations(cafile=str(ca_file))  # this CA only, no system store
    # The HomeWizard CA is X.509 v1 without extensions, which OpenSSL's strict mode
    # refuses; Python 3.13's create_default_context() turns strict mode on. Cleared here,
    # for a context that trusts nothing but that CA, as the official client does
    # (python-homewizard-energy v2/__init__.py: verify_flags = VERIFY_X509_PARTIAL_CHAIN).
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    context.check_hostname = False  # the device name is checked by _check_identity
    context.peer_check = lambda sock: _check_identity(sock, serial)
    return context


def pinned_context(certificate: PinnedCertificate, sha256: str | None = None) -> ssl.SSLContext:
    """Trust exactly the certificate seen at pairing: chain to it, then match its hash.

    ``sha256`` (HW_P1_CERT_SHA256) defaults to the pinned certificate's own fingerprint.
    """
    expected = sha256 or certificate.sha256
    context = _DeviceContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED
    context.load_verify_locations(cadata=certificate.pem)
    # The pinned leaf is its own trust anchor: it is not a CA and has no issuer here.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    # A device leaf without extensions (or without an authority key id) fails strict
    # mode; no Python sets it on a bare SSLContext today, cleared so none ever does.
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    # The fingerprint is the identity, with or without a subjectAltName in the leaf.
    context.check_hostname = False
    context.peer_check = lambda sock: _check_fingerprint(sock, expected)
    return context


class _CheckedSocket(ssl.SSLSocket):
    """An SSLSocket whose handshake also runs its context's device check.

    ``wrap_socket`` performs the handshake and closes the socket when it raises, so a
    failed check leaves the caller with an exception and no connection to write to.
    """

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        context = self.context
        if isinstance(context, _DeviceContext):
            context.peer_check(self)


class _DeviceContext(ssl.SSLContext):
    """An SSLContext for one meter: its sockets check the device after the handshake."""

    sslsocket_class = _CheckedSocket
    peer_check: Callable[[ssl.SSLSocket], None]

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        # Memory-BIO connections (asyncio, anyio) would skip the device check: refuse them
        # rather than connect unchecked. The meter client is synchronous.
        raise TypeError("meter TLS contexts serve blocking sockets only (wrap_socket)")


def _check_identity(sock: ssl.SSLSocket, serial: str) -> None:
    names = CertificateNames.of(sock.getpeercert() or {})
    if not names.name_device(serial):
        raise DeviceIdentityError(
            f"device identity mismatch: certificate names {names}, expected {device_name(serial)}"
        )


def _check_fingerprint(sock: ssl.SSLSocket, expected: str) -> None:
    der = sock.getpeercert(True)
    if der is None or fingerprint(der) != expected:
        raise DeviceIdentityError("certificate fingerprint differs from the one pinned at pairing")


@dataclass(frozen=True)
class CertificateNames:
    """The names a verified device certificate carries (from ``getpeercert()``)."""

    common_names: tuple[str, ...]
    dns_names: tuple[str, ...]

    @classmethod
    def of(cls, peercert: dict[str, Any]) -> CertificateNames:
        subject = peercert.get("subject", ())
        alt_names = peercert.get("subjectAltName", ())
        return cls(
            common_names=tuple(v for rdn in subject for k, v in rdn if k == "commonName"),
            dns_names=tuple(v for kind, v in alt_names if kind == "DNS"),
        )

    def name_device(self, serial: str) -> bool:
        """Whether a HomeWizard-issued certificate with these names is P1 meter ``serial``.

        The documented identity ``appliance/p1dongle/<serial>`` as common name (what
        every device presents, docs/v2/authorization.mdx "Hostname Validation"), or in a
        DNS subjectAltName that identity, the bare serial, or the serial as first label
        (``<serial>.<domain>``): issue #241 shows a DNS name that starts with the serial.
        A certificate that also names another appliance is refused: it is not one device.
        """
        serial = serial.lower()
        expected = device_name(serial)
        common = [name.lower() for name in self.common_names]
        dns = [name.lower() for name in self.dns_names]
        if any(name.startswith("appliance/") and name != expected for name in common + dns):
            return False
        if expected in common or expected in dns:
            return True
        return any(name == serial or name.startswith(serial + ".") for name in dns)

    def __str__(self) -> str:
        shown = [*self.common_names, *(f"DNS:{name}" for name in self.dns_names)]
        return ", ".join(shown) or "no name"


def fetch_leaf_certificate(host: str, port: int, timeout_s: float) -> PinnedCertificate:
    """The certificate the device presents, unverified: pairing's trust on first use.

    Sends nothing but a TLS handshake; raises OSError (incl. ssl.SSLError, timeouts).
    """
    pem = ssl.get_server_certificate((host, port), timeout=timeout_s)
    return PinnedCertificate.from_pem(pem)


def common_name(der: bytes) -> str:
    """The last commonName of the subject of a DER certificate (a minimal DER walk)."""
    try:
        _, start, _ = _tlv(der, 0)  # Certificate
        _, pos, tbs_end = _tlv(der, start)  # TBSCertificate
        fields: list[tuple[int, int, int]] = []
        while pos < tbs_end and len(fields) < 6:
            tag, content, end = _tlv(der, pos)
            fields.append((tag, content, end))
            pos = end
        if fields and fields[0][0] == 0xA0:  # explicit version
            fields = fields[1:]
        # serialNumber, signature, issuer, validity, subject
        _, subject_start, subject_end = fields[4]
        name = None
        pos = subject_start
        while pos < subject_end:  # RDN sets
            _, set_start, set_end = _tlv(der, pos)
            inner = set_start
            while inner < set_end:  # AttributeTypeAndValue
                _, atv_start, atv_end = _tlv(der, inner)
                _, oid_start, oid_end = _tlv(der, atv_start)
                if der[oid_start:oid_end] == _CN_OID:
                    _, value_start, value_end = _tlv(der, oid_end)
                    name = der[value_start:value_end].decode("utf-8")
                inner = atv_end
            pos = set_end
    except (IndexError, UnicodeDecodeError) as exc:
        raise CertificateError("cannot read the certificate's subject") from exc
    if not name:
        raise CertificateError("the certificate names no device (no subject common name)")
    return name


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    if pos + length > len(data):
        raise IndexError("DER element runs past the end")
    return tag, pos, pos + length
