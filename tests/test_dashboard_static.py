"""Static files in production: collectstatic with hashed, compressed names, served by
gunicorn itself (whitenoise), so the dashboard needs neither a CDN nor a proxy."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from p1common.processes import ROOT, run_server
from scripts import fetch_vendor

pytestmark = pytest.mark.django_db

COLLECT_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def production_env(tmp_path_factory) -> dict[str, str]:
    static_root = tmp_path_factory.mktemp("static")
    env = {
        "DJANGO_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "STATIC_ROOT": str(static_root),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input", "--verbosity", "0"],
        cwd=ROOT,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=COLLECT_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    return env


def test_production_serves_the_chart_library_under_a_hashed_name(production_env):
    with run_server(**production_env) as server, httpx.Client(timeout=30) as http:
        page = http.get(f"{server.url}/login")
        assert page.status_code == 200
        css = re.search(r'href="(/static/dashboard/dashboard\.[0-9a-f]{12}\.css)"', page.text)
        assert css, "the login page links the hashed stylesheet"
        styles = http.get(server.url + css.group(1))
        assert styles.status_code == 200
        assert "immutable" in styles.headers["Cache-Control"]
        manifest = json.loads(
            (Path(production_env["STATIC_ROOT"]) / "staticfiles.json").read_text()
        )
        name = manifest["paths"]["dashboard/vendor/chartjs/chart.umd.min.js"]
        assert name != "dashboard/vendor/chartjs/chart.umd.min.js"
        library = http.get(f"{server.url}/static/{name}")
        assert library.status_code == 200
        assert library.content == (fetch_vendor.TARGET / "chart.umd.min.js").read_bytes()


@pytest.mark.django_db
def test_favicon_ico_leads_to_the_dashboard_icon_without_a_404(client, caplog):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("/dashboard/icon.svg")
    assert not [r for r in caplog.records if "Not Found" in r.getMessage()]
