"""The type checker's configuration (docs/adr/0006-type-checker.md): every app package,
strict, nothing skipped wholesale, and run by CI between lint and the tests.

CI runs mypy itself (`make typecheck`); these checks keep the configuration from
quietly losing a package or gaining a blanket exemption.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.layout import APP_PACKAGES

ROOT = Path(__file__).resolve().parent.parent
MYPY = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def test_every_app_package_is_type_checked_strictly() -> None:
    assert set(MYPY["files"]) == APP_PACKAGES
    assert MYPY["exclude"] == ["/migrations/"]
    for option in ("check_untyped_defs", "disallow_untyped_defs", "disallow_incomplete_defs"):
        assert MYPY[option] is True, option
    assert "ignore-without-code" in MYPY["enable_error_code"]
    assert "mypy_django_plugin.main" in MYPY["plugins"]


def test_no_module_of_ours_is_exempt_from_every_check() -> None:
    for override in MYPY.get("overrides", []):
        modules = override["module"]
        ours = [m for m in modules if m.split(".")[0] in APP_PACKAGES]
        assert not (ours and override.get("ignore_errors")), modules
        assert not (ours and override.get("follow_imports") == "skip"), modules
        assert not (ours and override.get("check_untyped_defs") is False), modules


def test_ci_type_checks_after_lint_and_before_the_tests() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    lint = ci.index(".venv/bin/ruff format --check .")
    check = ci.index("P1_ROLE=server .venv/bin/mypy\n")
    tests = ci.index("make test")
    assert lint < check < tests
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^typecheck:.*\n(\t.*\n)*\tP1_ROLE=server \.venv/bin/mypy$", makefile, re.M)
