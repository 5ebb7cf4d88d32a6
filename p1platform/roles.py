"""Which settings a process gets, the server's or the edge's, when P1_ROLE is not set.

The edge installs requirements/edge.txt alone (Django and httpx; no DRF, psycopg or
redis). ``manage.py`` gives the edge commands the edge settings (the only ones that
install them), and every process in an install without the server packages gets them
when P1_ROLE is not set: an edge never needs P1_ROLE=edge. ``python -m edgeclient``
runs the same commands without Django at all (edgeclient/cli/). What cannot work says
so in one line: a server command under the edge settings, or P1_ROLE=server where the
server packages are missing.

Standard library only: this runs before Django and the settings are imported.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, MutableMapping, Sequence

ROLES = ("server", "edge")
EDGE_COMMANDS = ("run_edge", "hw_pair", "edge_status", "simulate_p1")
# Django's own commands that mean something under the edge settings too.
NEUTRAL_COMMANDS = frozenset({"help", "check", "version", "shell", "diffsettings"})
# What the server settings import at start (INSTALLED_APPS, middleware), all in
# requirements/server.txt and none in requirements/edge.txt.
SERVER_PACKAGES = ("rest_framework", "drf_spectacular", "drf_spectacular_sidecar", "whitenoise")
# Imported later by the server (database, cache, WSGI server): a ModuleNotFoundError
# naming one of these means the server requirements are not installed.
SERVER_ONLY_MODULES = frozenset(
    {*SERVER_PACKAGES, "psycopg", "psycopg_pool", "redis", "django_redis", "gunicorn", "orjson"}
)
_EDGE_LIST = ", ".join(EDGE_COMMANDS)


class RoleError(Exception):
    """The command cannot run with the settings this install allows; one line."""


def missing_server_packages() -> list[str]:
    """The server packages this interpreter cannot import (all of them on an edge)."""
    return [name for name in SERVER_PACKAGES if importlib.util.find_spec(name) is None]


def default_role() -> str:
    """P1_ROLE's default for any process (gunicorn, pytest, manage.py): the edge where the
    server packages are absent, else the server."""
    return "edge" if missing_server_packages() else "server"


def subcommand(argv: Sequence[str]) -> str:
    """The manage.py subcommand, as Django reads it (argv[1]; help when absent)."""
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        return "help"
    return "version" if argv[1] == "--version" else argv[1]


def choose_role(environ: Mapping[str, str], argv: Sequence[str]) -> str:
    """The role for ``manage.py <argv>``: the edge for the edge commands, else P1_ROLE
    when set, else ``default_role()``. Raises RoleError when the command cannot run."""
    command = subcommand(argv)
    explicit = (environ.get("P1_ROLE") or "").strip().lower()
    if explicit and explicit not in ROLES:
        return explicit  # the settings refuse it, naming P1_ROLE
    missing = missing_server_packages()
    if command in EDGE_COMMANDS:
        # Only the edge settings install edgeclient's commands: the server's apps no
        # longer include it (the wire format they share is p1wire), so even under
        # P1_ROLE=server (the server image) an edge command gets the edge settings.
        return "edge"
    if explicit:
        role = explicit
    elif missing:
        role = "edge"
    else:
        role = "server"
    if role == "server" and missing:
        raise RoleError(
            f"P1_ROLE=server: the server packages are not installed here (no "
            f"{', '.join(missing)}): install requirements/server.txt, or unset P1_ROLE to "
            f"run the edge commands ({_EDGE_LIST})"
        )
    if role == "edge" and command not in EDGE_COMMANDS and command not in NEUTRAL_COMMANDS:
        if explicit:
            why, fix = "with P1_ROLE=edge", "unset P1_ROLE or set P1_ROLE=server for the others"
        else:
            why = f"with only the edge packages installed (no {missing[0]})"
            fix = "the others need requirements/server.txt"
        raise RoleError(
            f"manage.py {command}: not an edge command; {why}, manage.py runs only "
            f"{_EDGE_LIST} ({fix})"
        )
    return role


def apply(environ: MutableMapping[str, str], argv: Sequence[str]) -> str:
    """Choose the role for manage.py and put it in P1_ROLE (the settings read it there)."""
    role = choose_role(environ, argv)
    environ["P1_ROLE"] = role
    return role
