"""The project's PostgreSQL connections, as DATABASE_URL makes them."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connection

from p1common.env import CONNECTION_OPTIONS, database_from_url


@pytest.mark.django_db
def test_connections_compile_no_statement_just_in_time():
    if connection.vendor != "postgresql":
        pytest.skip("JIT is PostgreSQL's; SQLite has none")
    with connection.cursor() as cursor:
        cursor.execute("SHOW jit")
        assert cursor.fetchone()[0] == "off"


def test_startup_options_are_jit_off_unless_the_url_names_its_own():
    url = "postgres://p1@db.example:5432/p1"
    assert (
        database_from_url("DATABASE_URL", url, sqlite_default=Path())["OPTIONS"]["options"]
        == CONNECTION_OPTIONS
    )
    own = database_from_url(
        "DATABASE_URL", url + "?options=-c%20statement_timeout%3D5s", sqlite_default=Path()
    )
    assert own["OPTIONS"]["options"] == "-c statement_timeout=5s"
    # A pooler that refuses startup options: ?options= with no value sends none.
    assert (
        "options"
        not in database_from_url("DATABASE_URL", url + "?options=", sqlite_default=Path())[
            "OPTIONS"
        ]
    )
