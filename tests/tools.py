"""Tools the suite drives for real: Debian packages, not Python dependencies.

Where one is missing its tests skip, naming the package to install, so the suite still
runs on a developer's machine without chromium or caddy. CI installs every one of them
(.ci/run) and sets TESTS_REQUIRE_TOOLS=1: there a missing tool fails the test instead,
so a green CI run never rests on a skipped test.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

REQUIRE_TOOLS = os.environ.get("TESTS_REQUIRE_TOOLS") == "1"


def tool_missing(reason: str) -> NoReturn:
    """Skip with ``reason``, or fail with it where every tool is required."""
    if REQUIRE_TOOLS:
        pytest.fail(f"{reason} (TESTS_REQUIRE_TOOLS=1: every tool must be installed)")
    pytest.skip(reason)


def need(tool: str, package: str) -> str:
    """The path of ``tool`` on PATH; skips (or fails) naming its Debian package."""
    path = shutil.which(tool)
    if path is None:
        tool_missing(f"{tool} is not installed (apt-get install -y {package})")
    return path
