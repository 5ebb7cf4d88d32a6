"""The README against the checkout: its screenshots exist and are all shown, every path
of its HTTP API table is a route of the server, and every variable the server's
settings and the edge's configuration read is named in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.urls import Resolver404, resolve

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
IMAGES = re.compile(r"!\[[^\]]+\]\((docs/screenshots/[^)]+)\)")
API_PATH = re.compile(r"`(?:GET|POST) (/[^`?\s]*)")


def api_table_paths() -> list[str]:
    """The paths in the first column of the HTTP API table (a row may name two)."""
    table = README.split("## HTTP API", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ", 1)[0] for line in table.splitlines() if line.startswith("| `")]
    return [path for row in rows for path in API_PATH.findall(row)]


def test_every_screenshot_is_shown_and_every_one_shown_exists():
    shown = set(IMAGES.findall(README))
    committed = {f"docs/screenshots/{p.name}" for p in (ROOT / "docs/screenshots").glob("*.png")}
    assert shown == committed


def _example(path: str) -> str:
    return path.replace("{YYYY-MM}", "2026-11")


@pytest.mark.parametrize("path", api_table_paths())
def test_every_path_of_the_api_table_is_a_route(path):
    try:
        resolve(_example(path))
    except Resolver404:
        pytest.fail(f"README's HTTP API table names {path}, which the server does not route")


def test_the_api_table_names_the_schema_and_its_docs():
    paths = set(api_table_paths())
    assert {"/v1/schema", "/v1/docs"} <= paths


SERVER_VARIABLE = re.compile(r'env_[a-z]+\(\s*"([A-Z][A-Z0-9_]+)"')
# The edge reads its variables by name (edgeclient/config.py, edgeclient/homewizard.py).
EDGE_VARIABLE = re.compile(
    r'"((?:HW_P1|VPS|EDGE)_[A-Z0-9_]+|[A-Z]+_(?:INTERVAL_S|BATCH_SIZE|MAX_S))"'
)


def test_every_setting_read_from_the_environment_is_in_the_readme():
    server = SERVER_VARIABLE.findall((ROOT / "p1platform/settings.py").read_text())
    edge = [
        name
        for module in ("edgeclient/config.py", "edgeclient/homewizard.py")
        for name in EDGE_VARIABLE.findall((ROOT / module).read_text())
    ]
    assert len(server) > 20 and len(edge) > 10  # the patterns still find them
    missing = sorted({name for name in server + edge if f"`{name}`" not in README})
    assert missing == []
