"""An edge-only install for tests and bench/: a real virtualenv holding
requirements/edge.txt alone.

Built offline from the test environment's own copies (each locked distribution of
requirements/edge.txt is linked into the new venv's site-packages at the locked
version), so DRF, psycopg, redis and the rest of the server requirements are simply not
there: ``import rest_framework`` fails as on a Raspberry Pi with the edge image.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from p1common.processes import ROOT

EDGE_LOCK = ROOT / "requirements" / "edge.txt"
COMMAND_TIMEOUT_S = 60


@dataclass(frozen=True)
class EdgeInstall:
    python: Path

    def manage(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = COMMAND_TIMEOUT_S
    ) -> subprocess.CompletedProcess:
        """``python manage.py ARGS`` in the edge install, without P1_ROLE unless ``env``
        sets it, and without the server's DATABASE_URL and REDIS_URL."""
        return subprocess.run(
            [str(self.python), "manage.py", *args],
            cwd=ROOT,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return edge_env(extra)


def edge_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the server's settings or a role, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("P1_", "PYTEST"))}
    for name in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV"):
        base.pop(name, None)
    return base | {"PYTHONUNBUFFERED": "1"} | (extra or {})


def locked_edge_requirements() -> list[Requirement]:
    """The pinned distributions of requirements/edge.txt that apply to this interpreter."""
    requirements = []
    for line in EDGE_LOCK.read_text().splitlines():
        text = line.split("\\", 1)[0].strip()
        if not text or text.startswith(("#", "--")):
            continue
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate():
            requirements.append(requirement)
    return requirements


def build_edge_install(target: Path) -> EdgeInstall:
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(target)],
        check=True,
        capture_output=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    python = target / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        ).stdout.strip()
    )
    for requirement in locked_edge_requirements():
        dist = importlib.metadata.distribution(requirement.name)
        if not requirement.specifier.contains(dist.version):
            raise RuntimeError(f"{requirement.name} {dist.version} is not the locked {requirement}")
        tops = {Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in tops:
            if top.endswith(".pth") or top == "__pycache__":
                continue
            link = site / top
            if not link.exists():
                link.symlink_to(Path(str(dist.locate_file(top))))
    return EdgeInstall(python)
