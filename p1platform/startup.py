"""Start-up checks shared by manage.py and gunicorn: a database that cannot be reached
is one line naming DATABASE_URL and what to do, not a page of traceback."""

from __future__ import annotations

import os
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


def database_problem(exc: BaseException, url: str | None = None) -> str:
    """One line for a database that refused or could not be reached."""
    url = os.environ.get("DATABASE_URL", "") if url is None else url
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1].strip()
    reason = reason.rsplit("FATAL:", 1)[-1].strip()  # libpq's prefix, host and port
    if not url:
        return (
            f"the embedded SQLite database cannot be opened ({reason}): check DATA_DIR, "
            "or set DATABASE_URL=postgres://user@host:5432/name"
        )
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if "does not exist" in reason and "database" in reason:
        todo = (
            f"create it (createdb -h {parts.hostname} -p {parts.port or 5432} "
            f"-U {parts.username or 'postgres'} {name}), then manage.py migrate"
        )
    else:
        todo = (
            f"is PostgreSQL running and reachable at {parts.hostname}:{parts.port or 5432}? "
            "Fix DATABASE_URL, or unset it for the embedded SQLite file"
        )
    return f"DATABASE_URL={shown_url(url)}: {reason}; {todo}"


def check_database() -> str | None:
    """None when DATABASE_URL's PostgreSQL accepts a connection (or SQLite is used),
    else the one line to print. For gunicorn's arbiter: psycopg only, no Django."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url or not url.startswith(("postgres://", "postgresql://")):
        return None
    import psycopg

    conninfo = url.split("?", 1)[0]
    try:
        psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg.Error as exc:
        return database_problem(exc, url)
    return None


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
