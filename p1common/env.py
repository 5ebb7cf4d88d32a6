"""Typed readers for environment variables, used by settings.py only.

Each raises ImproperlyConfigured naming the variable, so a bad value stops the process
at start-up with one line instead of failing later in a request.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

# Executions of one statement on one connection before psycopg prepares it.
PREPARE_THRESHOLD = 5
# PostgreSQL's startup options for the project's connections. JIT compilation pays off
# for long analytical statements; ours are short, and the cost estimate of one over a
# hypertable's many chunks (or a JSON relation the planner guesses at) passes JIT's
# thresholds: compiling the ingest steps' register-break window took 8.5 s for 5 ms of
# work (auto_explain, docs/PERFORMANCE.md). TimescaleDB's own Promscale turned it off
# for the same reason (timescale/promscale_extension#218, timescale/timescaledb#4222).
CONNECTION_OPTIONS = "-c jit=off"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}: expected true or false, got {raw!r}")


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}: expected a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}: must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}: must be at most {maximum}, got {value}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_networks(name: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Comma-separated addresses or networks (a bare address is a network of one)."""
    networks = []
    for item in env_list(name):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: expected addresses or networks like 127.0.0.1,10.0.0.0/8, got {item!r}"
            ) from None
    return networks


# A device's public id as the API carries it (telemetry.models validates with it too).
DEVICE_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
# A provisioned token: at least the 256 bits of `secrets.token_urlsafe(32)` (43
# characters) or `openssl rand -hex 32` (64), at most what a token lookup reads.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43,200}")
_DEVICE_ID = re.compile(DEVICE_ID_PATTERN)


def env_device_tokens(name: str) -> list[tuple[str, str]]:
    """``device_id:token,device_id:token``: the (device id, token) pairs, in order.

    An error names the variable and the entry by its place in the list, never its text:
    an entry that is wrong may be a token, or hold one before its colon (a pair written
    the wrong way round), and a start-up error ends up in logs.
    """
    raw = os.environ.get(name, "")
    entries = [item.strip() for item in raw.split(",")]
    entries = [item for item in entries if item]
    pairs: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for place, entry in enumerate(entries, start=1):
        where = f"{name}: entry {place} of {len(entries)}"
        device_id, colon, token = entry.partition(":")
        if not colon:
            raise ImproperlyConfigured(
                f"{where} has no device id: write device_id:token (every token belongs to "
                "one device)"
            )
        device_id, token = device_id.strip(), token.strip()
        if not _DEVICE_ID.fullmatch(device_id):
            raise ImproperlyConfigured(
                f"{where}: the device id before the colon must be 1 to 64 lowercase letters, "
                "digits and inner hyphens"
            )
        if not _TOKEN.fullmatch(token):
            # Not even the device id: a pair the wrong way round has the token there.
            raise ImproperlyConfigured(
                f"{where}: the token after the colon must be 43 to 200 characters of "
                "A-Z, a-z, 0-9, _ and - (python3 -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
        if token in seen:
            raise ImproperlyConfigured(
                f"{where} (device {device_id}): repeats the token of entry {seen[token]}"
            )
        seen[token] = place
        pairs.append((device_id, token))
    return pairs


def env_choice(name: str, choices: tuple[str, ...], default: str) -> str:
    value = env_str(name, default).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def env_rate(name: str, default: str | None) -> str | None:
    """A DRF throttle rate such as ``120/min``; ``off`` disables the throttle."""
    raw = env_str(name, default or "off")
    if raw.lower() in ("off", "none", ""):
        return None
    count, _, period = raw.partition("/")
    if not count.isdigit() or period[:1] not in ("s", "m", "h", "d"):
        raise ImproperlyConfigured(f"{name}: expected a rate like 120/min or off, got {raw!r}")
    return raw


def database_from_url(name: str, url: str, *, sqlite_default: Path) -> dict:
    """Django DATABASES["default"] from postgres://... or sqlite:///path (empty: SQLite)."""
    if not url:
        return _sqlite(sqlite_default)
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        # sqlite:///relative/file and sqlite:////absolute/file, as most tools read them.
        path = unquote(parts.path)[1:]
        if not path:
            raise ImproperlyConfigured(f"{name}: sqlite URL names no file, got {url!r}")
        return _sqlite(Path(path))
    if parts.scheme not in ("postgres", "postgresql"):
        raise ImproperlyConfigured(
            f"{name}: expected postgres://user@host:port/db or sqlite:///file, got scheme "
            f"{parts.scheme!r}"
        )
    db_name = unquote(parts.path.lstrip("/"))
    if not db_name:
        raise ImproperlyConfigured(f"{name}: names no database, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ImproperlyConfigured(f"{name}: bad port in {url!r}") from None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    options: dict[str, Any] = {
        key: value for key, value in query.items() if value or key == "prepare_threshold"
    }
    options.setdefault("connect_timeout", "3")
    # ?options= names the startup options instead (with no value: none, for a pooler
    # that refuses the parameter).
    if "options" not in query:
        options["options"] = CONNECTION_OPTIONS
    # Django turns psycopg's prepared statements off; its own queries bind client-side
    # and are never prepared anyway, but the ingest insert (a server-binding cursor) is
    # then parsed and planned on every batch. Prepared, a connection plans it once.
    # A transaction-mode pooler in front (PgBouncer before 1.21) needs ?prepare_threshold=
    # with no value: that turns preparing off again.
    threshold = options.pop("prepare_threshold", str(PREPARE_THRESHOLD))
    if threshold:
        try:
            options["prepare_threshold"] = int(threshold)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name}: prepare_threshold must be a whole number or empty, got {threshold!r}"
            ) from None
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": db_name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(port or ""),
        "OPTIONS": options,
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


def replica_from_url(name: str, url: str, primary: dict) -> dict | None:
    """DATABASES["replica"]: a PostgreSQL streaming replica of ``primary`` (None: unset)."""
    if not url:
        return None
    if primary["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            f"{name}: a streaming replica needs a PostgreSQL DATABASE_URL, and DATABASE_URL "
            "is not one"
        )
    replica = database_from_url(name, url, sqlite_default=Path())
    if replica["ENGINE"] != primary["ENGINE"]:
        raise ImproperlyConfigured(
            f"{name}: expected postgres://user@host:port/db, got {urlsplit(url).scheme!r}"
        )
    # Tests run on the primary's test database alone: the replica cannot create one (it
    # is read-only), and a test reading "the replica" reads the same rows there.
    replica["TEST"] = {"MIRROR": "default"}
    return replica


def _sqlite(path: Path) -> dict:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            # WAL lets the dashboard read while the ingest writes; IMMEDIATE avoids
            # the upgrade deadlock between two writers.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
        "TEST": {"NAME": str(path.with_name(path.stem + "-test.sqlite3"))},
    }
