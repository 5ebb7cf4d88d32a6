#!/usr/bin/env python3
"""Fetch the dashboard's chart library from the npm registry, pinned and hash-checked.

The dashboard must work on a LAN without internet access, so Chart.js is served from
our own static files. This script downloads the pinned tarball, refuses it unless its
SHA-512 matches the registry's ``dist.integrity`` recorded below, and extracts the UMD
build (without its source-map comment) and the licence into
dashboard/static/dashboard/vendor/chartjs/. The fetched files are committed;
tests/test_dashboard.py checks them against VENDOR_SHA256 so a hand edit is caught.
Standard library only.

    python scripts/fetch_vendor.py            # fetch, verify, extract
    python scripts/fetch_vendor.py --check    # verify the committed files only

To upgrade: change VERSION and INTEGRITY (``npm view chart.js@X dist.integrity``), run
the script, and put the sha256 it prints into VENDOR_SHA256.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGE = "chart.js"
VERSION = "4.6.1"
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
# npm's dist.integrity for chart.js 4.6.1 (Subresource Integrity form: sha512-<base64>).
INTEGRITY = "sha512-hJyniucsFmq//EvXYvJ6c6mahPoI3kaxdjVH8awTaJ/fDNWeSqqqArixMJWkWNN6fcYvPU3HneSANFNYtRi61g=="  # noqa: E501
# Member of the tarball -> file name under TARGET.
FILES = {
    "package/dist/chart.umd.min.js": "chart.umd.min.js",
    "package/LICENSE.md": "LICENSE.md",
}
# sha256 of each extracted file, so a committed copy can be checked without the network.
VENDOR_SHA256 = {
    "chart.umd.min.js": "c17f2ce49fb9c71ef7fb39c03f868804ac5ab34730149976eebe6b7f807bef0c",
    "LICENSE.md": "41a84aa2caba645f966a18d9c2056b73e6d3a81d80bc0046bc0011a2634d4cce",
}
ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "dashboard" / "static" / "dashboard" / "vendor" / "chartjs"
DOWNLOAD_TIMEOUT_S = 60
MAX_TARBALL_BYTES = 20 * 1024 * 1024


class VendorError(Exception):
    pass


def integrity_of(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")


def download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 - fixed https URL
            data = response.read(MAX_TARBALL_BYTES + 1)
    except OSError as exc:
        raise VendorError(f"cannot download {url}: {exc}") from exc
    if len(data) > MAX_TARBALL_BYTES:
        raise VendorError(f"{url} is larger than {MAX_TARBALL_BYTES} bytes")
    return data


def verify_tarball(data: bytes, expected: str = INTEGRITY) -> None:
    got = integrity_of(data)
    if got != expected:
        raise VendorError(
            f"{PACKAGE} {VERSION}: integrity mismatch, expected {expected}, got {got}"
        )


def extract(data: bytes, target: Path = TARGET) -> dict[str, str]:
    """Write FILES from the verified tarball; returns their sha256 by file name."""
    target.mkdir(parents=True, exist_ok=True)
    hashes = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member_name, file_name in FILES.items():
            member = tar.getmember(member_name)
            handle = tar.extractfile(member)
            if handle is None:
                raise VendorError(f"{member_name} is not a regular file in the tarball")
            content = without_source_map(handle.read())
            (target / file_name).write_bytes(content)
            hashes[file_name] = hashlib.sha256(content).hexdigest()
    return hashes


def without_source_map(content: bytes) -> bytes:
    """Drop a trailing ``//# sourceMappingURL=`` comment: the map (1 MB) is not shipped,
    and collectstatic's manifest storage refuses a reference to a file that is absent."""
    lines = content.rstrip(b"\n").split(b"\n")
    if lines[-1].startswith(b"//# sourceMappingURL="):
        return b"\n".join(lines[:-1]) + b"\n"
    return content


def check_committed(target: Path = TARGET) -> list[str]:
    """Problems with the committed files (empty when they match VENDOR_SHA256)."""
    problems = []
    for file_name, expected in VENDOR_SHA256.items():
        path = target / file_name
        if not path.exists():
            problems.append(f"{path} is missing")
            continue
        got = hashlib.sha256(path.read_bytes()).hexdigest()
        if got != expected:
            problems.append(f"{path}: sha256 {got}, expected {expected}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify committed files only")
    args = parser.parse_args(argv)
    try:
        if not args.check:
            data = download(TARBALL_URL)
            verify_tarball(data)
            for file_name, digest in extract(data).items():
                print(f"{file_name} sha256 {digest}")
        problems = check_committed()
    except VendorError as exc:
        print(f"fetch_vendor: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"fetch_vendor: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
