"""The repository's app packages: the code the type checker, the storage grep and the
dependency direction cover (tests, bench, scripts and migrations are not app code)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_PACKAGES = frozenset(
    {
        "p1common",
        "p1wire",
        "p1platform",
        "telemetry",
        "capacity",
        "peakguard",
        "dashboard",
        "demo",
        "edgeclient",
        "integrations",
    }
)
