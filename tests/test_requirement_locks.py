"""The requirement locks: every package pinned and hash-checked wherever it is installed."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"


def locked_packages(lock: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes), parsed from a uv/pip-compile lock."""
    packages: dict[str, tuple[str, int]] = {}
    name = None
    for line in lock.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if pin:
            name = pin.group(1).lower().replace("_", "-")
            packages[name] = (pin.group(2), 0)
        elif name and "--hash=sha256:" in line:
            version, hashes = packages[name]
            packages[name] = (version, hashes + 1)
        elif line and not line.startswith((" ", "#")):
            pytest.fail(f"{lock.name}: line not from the lock tool: {line!r}")
    return packages


def loose_names(source: Path) -> set[str]:
    names = set()
    for line in source.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r "):
            names |= loose_names(source.parent / line[3:].strip())
        elif line and not line.startswith("-"):
            names.add(re.split(r"[\[<>=!~ ;]", line)[0].lower().replace("_", "-"))
    return names


@pytest.mark.parametrize("set_name", ["edge", "server", "dev"])
def test_every_locked_package_is_pinned_with_hashes(set_name: str) -> None:
    packages = locked_packages(REQUIREMENTS / f"{set_name}.txt")
    assert packages
    unhashed = [name for name, (_, hashes) in packages.items() if hashes == 0]
    assert not unhashed


@pytest.mark.parametrize("set_name", ["edge", "server", "dev"])
def test_lock_holds_everything_its_loose_list_names(set_name: str) -> None:
    packages = locked_packages(REQUIREMENTS / f"{set_name}.txt")
    missing = loose_names(REQUIREMENTS / f"{set_name}.in") - set(packages)
    assert not missing, f"run `make lock`: {sorted(missing)} not in {set_name}.txt"


def test_locks_agree_on_versions() -> None:
    edge, server, dev = (
        locked_packages(REQUIREMENTS / f"{n}.txt") for n in ("edge", "server", "dev")
    )
    for smaller, larger in ((edge, server), (server, dev)):
        for name, (version, _) in smaller.items():
            assert larger[name][0] == version, name


def test_edge_lock_has_no_server_packages() -> None:
    edge = locked_packages(REQUIREMENTS / "edge.txt")
    assert not {"djangorestframework", "psycopg", "redis", "django-redis"} & set(edge)


@pytest.mark.parametrize(
    "installer", ["scripts/venv.sh", "deploy/Dockerfile.server", "deploy/Dockerfile.edge"]
)
def test_installs_check_hashes(installer: str) -> None:
    text = (ROOT / installer).read_text()
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs
    assert all("--require-hashes" in line for line in installs)
