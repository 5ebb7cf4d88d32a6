"""Certificates for the simulated meter, shaped like the real ones, made with ``openssl``.

The shapes come from the public record (see edgeclient/meter_tls.py for the sources):

- The CA plays HomeWizard's "Appliance Access CA": RSA 2048, sha256WithRSAEncryption,
  X.509 version 1, no extension at all (no basicConstraints, keyUsage or key ids), the
  shape of the PEM HomeWizard publishes (api-documentation static/homewizard-ca-cert.pem,
  python-homewizard-energy v2/cacert.py). ``openssl x509 -req`` without ``-extfile``
  issues exactly that.
- The device certificate: subject ``CN=appliance/p1dongle/<serial>`` and nothing else,
  certificate serial number = the device serial, valid 2025-01-01 00:00:00 to 2049-12-31
  23:59:59 UTC, as github:homewizard/api-documentation issue #241 shows a real P1 meter's.
  ``san=True`` adds the DNS subjectAltName that issue reports, ``DNS:<serial>`` (the
  record shows a DNS name that starts with the serial; its tail is cut off there). With
  no extension the leaf is version 1; with the SAN it is version 3 carrying only that
  extension (``authorityKeyIdentifier=none``: OpenSSL would otherwise add key ids the
  record does not show). The record does not show the device key: RSA 2048 like the CA.

The openssl CLI is on every Debian and Raspberry Pi OS image; using it keeps the
``cryptography`` package out of the edge requirements.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEVICE_NAME_PREFIX = "appliance/p1dongle/"
CA_SUBJECT = "/C=NL/ST=ZH/O=P1 Platform simulator/CN=Simulated Appliance Access CA"
DEVICE_NOT_BEFORE = "20250101000000Z"
DEVICE_NOT_AFTER = "20491231235959Z"
_CA_VALID_DAYS = "3650"
_RSA = ["-newkey", "rsa:2048", "-nodes"]
_OPENSSL_TIMEOUT_S = 30
# Bumped whenever the shape changes, so certificate directories kept from an older
# version (the simulator reuses them across runs) are made again.
_SHAPE = "homewizard-v1-rsa-2"


class CertificateToolError(RuntimeError):
    pass


@dataclass(frozen=True)
class SimulatorCertificates:
    ca_file: Path
    cert_file: Path
    key_file: Path
    device_name: str
    dns_name: str | None = None  # the leaf's DNS subjectAltName, when it has one


def device_name(serial: str) -> str:
    return DEVICE_NAME_PREFIX + serial


def ensure_certificates(cert_dir: Path, serial: str, *, san: bool = False) -> SimulatorCertificates:
    """The CA and leaf in ``cert_dir``, generated once and reused while serial and shape hold.

    ``serial`` must be hex (real serials are the device's MAC, 12 hex digits): it is also
    the certificate's serial number, as on the real devices.
    """
    if not serial or any(ch not in "0123456789abcdef" for ch in serial):
        raise ValueError(f"device serial must be lowercase hex, got {serial!r}")
    cert_dir.mkdir(parents=True, exist_ok=True)
    certs = SimulatorCertificates(
        ca_file=cert_dir / "ca.pem",
        cert_file=cert_dir / "device.pem",
        key_file=cert_dir / "device.key",
        device_name=device_name(serial),
        dns_name=serial if san else None,
    )
    marker = cert_dir / "serial.txt"
    wanted = f"{serial} {'san' if san else 'cn-only'} {_SHAPE}"
    present = all(p.exists() for p in (certs.ca_file, certs.cert_file, certs.key_file))
    if present and marker.exists() and marker.read_text().strip() == wanted:
        return certs
    _require_openssl()
    ca_key = cert_dir / "ca.key"
    make_ca(certs.ca_file, ca_key)
    issue_device_certificate(
        certs.ca_file, ca_key, serial, certs.cert_file, certs.key_file, dns_name=certs.dns_name
    )
    marker.write_text(wanted + "\n")
    return certs


def make_ca(ca_file: Path, ca_key: Path, subject: str = CA_SUBJECT) -> None:
    """A self-signed X.509 v1 RSA CA without extensions, like HomeWizard's."""
    _require_openssl()
    with tempfile.TemporaryDirectory(prefix="simca-") as work:
        csr = Path(work) / "ca.csr"
        _openssl("req", "-new", *_RSA, "-keyout", str(ca_key), "-out", str(csr), "-subj", subject)
        # x509 -req without -extfile writes a version 1 certificate with no extension.
        _openssl(
            "x509", "-req", "-in", str(csr), "-signkey", str(ca_key), "-sha256",
            "-days", _CA_VALID_DAYS, "-out", str(ca_file),
        )  # fmt: skip


def issue_device_certificate(
    ca_file: Path,
    ca_key: Path,
    serial: str,
    cert_file: Path,
    key_file: Path,
    *,
    dns_name: str | None = None,
) -> None:
    """A P1 meter's leaf for ``serial`` signed by the CA, with an optional DNS SAN.

    ``openssl ca`` rather than ``x509 -req``: it alone sets fixed validity dates (the
    real leaf's) and takes the serial number from a file on OpenSSL 3.0.
    """
    _require_openssl()
    with tempfile.TemporaryDirectory(prefix="simleaf-") as work_dir:
        work = Path(work_dir)
        csr = work / "device.csr"
        _openssl(
            "req", "-new", *_RSA, "-keyout", str(key_file), "-out", str(csr),
            # -subj splits on "/", so the slashes of the device name are escaped.
            "-subj", "/CN=" + device_name(serial).replace("/", "\\/"),
        )  # fmt: skip
        (work / "index.txt").write_text("")
        (work / "serial").write_text(serial.upper() + "\n")
        extensions = ""
        if dns_name is not None:
            extensions = (
                "[device_san]\n"
                f"subjectAltName = DNS:{dns_name}\n"
                "subjectKeyIdentifier = none\n"
                "authorityKeyIdentifier = none\n"
            )
        config = work / "ca.cnf"
        config.write_text(
            "[ca]\ndefault_ca = device_ca\n"
            "[device_ca]\n"
            f"database = {work / 'index.txt'}\n"
            f"new_certs_dir = {work}\n"
            f"serial = {work / 'serial'}\n"
            "default_md = sha256\n"
            "policy = device_policy\n"
            "unique_subject = no\n"
            "[device_policy]\ncommonName = supplied\n" + extensions
        )
        # Without -extensions, openssl ca writes a version 1 certificate.
        san_args = ["-extensions", "device_san"] if dns_name is not None else []
        _openssl(
            "ca", "-batch", "-config", str(config), "-cert", str(ca_file),
            "-keyfile", str(ca_key), "-in", str(csr), "-out", str(cert_file), "-notext",
            "-startdate", DEVICE_NOT_BEFORE, "-enddate", DEVICE_NOT_AFTER, *san_args,
        )  # fmt: skip


def _require_openssl() -> None:
    if shutil.which("openssl") is None:
        raise CertificateToolError("the openssl command is needed to make the simulator's TLS")


def _openssl(*args: str) -> None:
    try:
        subprocess.run(
            ["openssl", *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=_OPENSSL_TIMEOUT_S,
        )
    except subprocess.CalledProcessError as exc:
        message = exc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise CertificateToolError(f"openssl {args[0]} failed: {message[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CertificateToolError(f"openssl {args[0]} took over {_OPENSSL_TIMEOUT_S} s") from exc
