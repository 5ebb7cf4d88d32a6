"""Start-up checks shared by manage.py and gunicorn: a database that cannot be reached
is one line naming DATABASE_URL and what to do, not a page of traceback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Seconds gunicorn's start-up check waits for PostgreSQL (the settings' connect_timeout).
CONNECT_TIMEOUT_S = 3


def shown_url(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def connect_params(url: str) -> dict[str, Any]:
    """psycopg's connection keywords for a postgres:// DATABASE_URL, exactly as the
    settings build them (every libpq option of the URL's query kept: sslmode,
    sslrootcert, ...), without psycopg's own prepare_threshold."""
    from p1common.env import database_from_url

    db = database_from_url("DATABASE_URL", url, sqlite_default=Path("unused"))
    options = {k: v for k, v in db["OPTIONS"].items() if k != "prepare_threshold"}
    options["connect_timeout"] = CONNECT_TIMEOUT_S
    named = {
        "dbname": db["NAME"],
        "user": db["USER"],
        "password": db["PASSWORD"],
        "host": db["HOST"],
        "port": db["PORT"],
    }
    return {**{k: v for k, v in named.items() if v}, **options}


def _what_to_do(url: str) -> str:
    """Ask the server rather than read its message: when the same credentials open its
    maintenance database, the server is up; then the catalogue says whether ours exists."""
    import psycopg

    params = connect_params(url)
    name = params.get("dbname", "")
    host, port = params.get("host", "localhost"), params.get("port", 5432)
    try:
        with psycopg.connect(**{**params, "dbname": "postgres"}) as probe:
            exists = probe.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            found = exists.fetchone() is not None
    except psycopg.Error:
        return (
            f"is PostgreSQL running and reachable at {host}:{port}, and are the user and "
            "password right? Fix DATABASE_URL, or unset it for the embedded SQLite file"
        )
    if not found:
        return (
            f"the database does not exist: create it (createdb -h {host} -p {port} "
            f"-U {params.get('user', 'postgres')} {name}), then manage.py migrate"
        )
    return "the server refused this database: check the user's rights on it in DATABASE_URL"


def database_problem(exc: BaseException, url: str | None = None) -> str:
    """One line for a database that refused or could not be reached."""
    url = os.environ.get("DATABASE_URL", "") if url is None else url
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
    reason = reason.rsplit("FATAL:", 1)[-1].strip()  # libpq's prefix, host and port
    if not url or url.startswith("sqlite"):
        return (
            f"the embedded SQLite database cannot be opened ({reason}): check DATA_DIR, "
            "or set DATABASE_URL=postgres://user@host:5432/name"
        )
    return f"DATABASE_URL={shown_url(url)}: {reason}; {_what_to_do(url)}"


def check_database() -> str | None:
    """None when DATABASE_URL's PostgreSQL accepts a connection (or SQLite is used),
    else the one line to print. For gunicorn's arbiter: psycopg only, no Django."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url or not url.startswith(("postgres://", "postgresql://")):
        return None
    import psycopg

    try:
        psycopg.connect(**connect_params(url)).close()
    except psycopg.Error as exc:
        return database_problem(exc, url)
    return None


def connection_failed(exc: BaseException) -> bool:
    """Whether a database error (Django's, caused by the driver's) came from opening a
    connection (an unreachable or missing database) rather than from a statement on an
    open one (a timeout, a deadlock), by the driver's error codes: a PostgreSQL server
    answers a statement with an SQLSTATE, while a connection that never opened has none;
    SQLite says SQLITE_CANTOPEN."""
    import sqlite3

    cause = exc.__cause__
    if isinstance(cause, sqlite3.OperationalError):
        return cause.sqlite_errorcode == sqlite3.SQLITE_CANTOPEN
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(cause, psycopg.OperationalError) and cause.sqlstate is None


def port_problem(port_text: str, host: str = "127.0.0.1") -> str | None:
    """None when ``make run`` can listen on the port, else the one line to print."""
    import errno
    import socket

    try:
        port = int(port_text)
        if not 0 < port <= 65535:
            raise ValueError(port_text)
    except ValueError:
        return f"PORT: expected 1..65535, got {port_text!r}"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is already in use: stop what runs there, "
                    f"or choose another with PORT={port + 1} make run"
                )
            return f"cannot listen on {host}:{port}: {exc.strerror}"
    return None


def main(argv: list[str]) -> int:
    """``python -m p1platform.startup port N`` / ``database``: exit 2 with one line."""
    import sys

    if len(argv) == 2 and argv[0] == "port":
        problem = port_problem(argv[1])
    elif argv == ["database"]:
        problem = check_database()
    else:
        print("usage: python -m p1platform.startup port N | database", file=sys.stderr)
        return 2
    if problem is None:
        return 0
    print(problem, file=sys.stderr)
    return 2


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
