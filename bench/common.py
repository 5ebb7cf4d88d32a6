"""What every benchmark does first: a fresh database, migrated, and Django set up."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def recreate_database(url: str) -> None:
    """Drop and create the database named by a postgres:// URL."""
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    admin = urlunsplit(urlsplit(url)._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def migrate_and_setup(settings_module: str = "p1platform.settings") -> None:
    """Migrate the database of DATABASE_URL and set Django up in this process."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", settings_module)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, check=True
    )
    import django

    django.setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)
