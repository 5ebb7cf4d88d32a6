"""The dependency direction of the code (docs/ARCHITECTURE.md), checked on the source.

peakguard -> capacity -> telemetry -> the shared helpers (p1common, p1wire); the edge
imports nothing of the server; the project package (p1platform) may import the apps it
wires together, and no app imports it; bench/ and scripts/ import nothing from tests/.
Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.layout import APP_PACKAGES

ROOT = Path(__file__).resolve().parent.parent
SHARED = {"p1common", "p1wire"}
# Each package of ours and the packages of ours it may import.
ALLOWED: dict[str, set[str]] = {
    "p1wire": set(),
    "p1common": set(),
    "edgeclient": {"p1wire"},
    "telemetry": SHARED,
    "capacity": {"telemetry", *SHARED},
    "peakguard": {"capacity", "telemetry", *SHARED},
    "integrations": {"peakguard", "capacity", "telemetry", *SHARED},
    "dashboard": {"peakguard", "capacity", "telemetry", *SHARED},
    "demo": {"edgeclient", "peakguard", "capacity", "telemetry", *SHARED},
    "p1platform": {"integrations", "dashboard", "peakguard", "capacity", "telemetry", *SHARED},
    "bench": {"p1platform", "demo", "edgeclient", "peakguard", "capacity", "telemetry", *SHARED},
    "scripts": {"p1platform", "demo", "edgeclient", "peakguard", "capacity", "telemetry", *SHARED},
}
# What a Raspberry Pi does not install (requirements/edge.txt): the edge never needs it.
SERVER_ONLY = {"rest_framework", "drf_spectacular", "psycopg", "redis", "django_redis", "orjson"}


def imported_top_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def package_imports(package: str) -> dict[Path, set[str]]:
    """Each module of the package and which of our top-level packages it imports."""
    ours = set(ALLOWED) | {"tests"}
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        found[path] = (imported_top_names(path) & ours) - {package}
    return found


def test_the_direction_covers_exactly_the_app_packages_and_bench_and_scripts():
    assert set(ALLOWED) == APP_PACKAGES | {"bench", "scripts"}


def test_every_top_level_package_has_a_place_in_the_direction():
    packages = {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and ((p / "__init__.py").exists() or p.name in ("scripts",))
    } - {"tests"}
    assert packages <= set(ALLOWED), f"add {sorted(packages - set(ALLOWED))} to ALLOWED"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_below_it(package):
    wrong = {
        str(path.relative_to(ROOT)): sorted(names - ALLOWED[package])
        for path, names in package_imports(package).items()
        if names - ALLOWED[package]
    }
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}: {wrong}"


def test_the_edge_imports_nothing_the_server_installs():
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_top_names(path) & SERVER_ONLY)
        for package in ("edgeclient", "p1wire")
        for path in sorted((ROOT / package).rglob("*.py"))
        if imported_top_names(path) & SERVER_ONLY
    }
    assert not wrong


def test_the_wire_format_depends_on_the_standard_library_alone():
    allowed = {"__future__", "typing", "datetime", "math", "collections", "dataclasses"}
    names = set()
    for path in (ROOT / "p1wire").rglob("*.py"):
        names |= imported_top_names(path)
    assert names <= allowed, sorted(names - allowed)


def test_no_package_imports_another_in_a_circle():
    graph = {p: set().union(*package_imports(p).values()) - {"tests"} for p in ALLOWED}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circular = sorted(p for p in graph if reaches(p, p, {p}))
    assert not circular
