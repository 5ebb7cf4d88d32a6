"""TLS trust for the meter's v2 API: the HomeWizard CA, or the certificate pinned at pairing.

The device certificate names the device (``appliance/p1dongle/<serial>``) in its common
name and has no subjectAltName, so every context here turns on
``hostname_checks_common_name`` and the caller passes that name as the TLS server name.
Verification is never switched off; the only unverified fetch is
``fetch_leaf_certificate``, used by pairing to show a fingerprint (trust on first use)
and never with credentials.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

_CN_OID = bytes.fromhex("550403")  # 2.5.4.3 commonName


class CertificateError(ValueError):
    """A PEM file or fingerprint that cannot be used as a pin."""


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


def ca_context(ca_file: Path) -> ssl.SSLContext:
    """Trust the HomeWizard CA; the caller checks the device name as server_hostname."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.hostname_checks_common_name = True
    return context


def pinned_context(certificate: PinnedCertificate) -> ssl.SSLContext:
    """Trust exactly the certificate seen at pairing, and check its name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    context.load_verify_locations(cadata=certificate.pem)
    # The pinned leaf is its own trust anchor: it is not a CA and has no issuer here.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.hostname_checks_common_name = True
    return context


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
