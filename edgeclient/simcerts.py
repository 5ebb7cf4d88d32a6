"""Certificates for the simulated meter, made with the ``openssl`` command-line tool.

A small CA plays the HomeWizard CA; the leaf carries the device name
``appliance/p1dongle/<serial>`` in its common name only (no subjectAltName), as the real
devices do, so clients must check the name the way HomeWizard documents.
The openssl CLI is on every Debian and Raspberry Pi OS image; using it keeps the
``cryptography`` package out of the edge requirements.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEVICE_NAME_PREFIX = "appliance/p1dongle/"
_VALID_DAYS = "3650"
_OPENSSL_TIMEOUT_S = 30


class CertificateToolError(RuntimeError):
    pass


@dataclass(frozen=True)
class SimulatorCertificates:
    ca_file: Path
    cert_file: Path
    key_file: Path
    device_name: str


def device_name(serial: str) -> str:
    return DEVICE_NAME_PREFIX + serial


def ensure_certificates(cert_dir: Path, serial: str) -> SimulatorCertificates:
    """The CA and leaf in ``cert_dir``, generated once and reused while the serial holds."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    certs = SimulatorCertificates(
        ca_file=cert_dir / "ca.pem",
        cert_file=cert_dir / "device.pem",
        key_file=cert_dir / "device.key",
        device_name=device_name(serial),
    )
    marker = cert_dir / "serial.txt"
    present = all(p.exists() for p in (certs.ca_file, certs.cert_file, certs.key_file))
    if present and marker.exists() and marker.read_text().strip() == serial:
        return certs
    _generate(cert_dir, certs)
    marker.write_text(serial + "\n")
    return certs


def _generate(cert_dir: Path, certs: SimulatorCertificates) -> None:
    if shutil.which("openssl") is None:
        raise CertificateToolError("the openssl command is needed to make the simulator's TLS")
    ca_key = cert_dir / "ca.key"
    csr = cert_dir / "device.csr"
    ext = cert_dir / "device.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(certs.ca_file),
        "-days", _VALID_DAYS, "-subj", "/CN=P1 Platform simulated HomeWizard CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        "req", "-new", *ec, "-keyout", str(certs.key_file), "-out", str(csr),
        # -subj splits on "/", so the slashes of the device name are escaped.
        "-subj", "/CN=" + certs.device_name.replace("/", "\\/"),
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(certs.ca_file), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(certs.cert_file), "-days", _VALID_DAYS,
        "-extfile", str(ext),
    )  # fmt: skip
    csr.unlink(missing_ok=True)
    ext.unlink(missing_ok=True)


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
