"""What every benchmark does first: a fresh database, migrated, and Django set up."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
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


def fresh_database(database_url: str, redis_url: str | None = None) -> None:
    """A new, migrated database for this process and the servers it starts: throttling
    off, Redis only when given."""
    recreate_database(database_url)
    os.environ["DATABASE_URL"] = database_url
    os.environ["INGEST_THROTTLE_RATE"] = "off"
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
    else:
        os.environ.pop("REDIS_URL", None)
    migrate_and_setup()


def timed_threads(work: Callable[[int, threading.Barrier], None], count: int) -> float:
    """Run work(i, start) in count threads; each calls start.wait() once it is ready, and
    the clock runs from their common start until the last one finishes."""
    start = threading.Barrier(count + 1)
    threads = [threading.Thread(target=work, args=(i, start)) for i in range(count)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - began
