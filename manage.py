#!/usr/bin/env python3
"""Django's command-line utility for P1 Platform."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "p1platform.settings")
    from p1platform import roles

    try:
        # Without P1_ROLE: the edge settings for the edge commands and in an edge-only
        # install (requirements/edge.txt), the server's otherwise (p1platform/roles.py).
        roles.apply(os.environ, sys.argv)
    except roles.RoleError as exc:
        _fail(str(exc))
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db.utils import OperationalError

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # Settings name the bad variable; one line is all an operator needs.
        _fail(str(exc))
    except OperationalError as exc:
        from p1platform.startup import connection_failed, database_problem

        if not connection_failed(exc):
            raise  # a statement failed on an open connection: its traceback helps
        print(f"database error: {database_problem(exc)}", file=sys.stderr)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in roles.SERVER_ONLY_MODULES:
            raise
        _fail(f"{exc.name} is not installed: the server needs requirements/server.txt")


def _fail(message: str) -> None:
    print(f"configuration error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
