"""The edge's configuration, read from the environment once at start.

Every bad value raises one ConfigError whose message starts with the variable's name,
so ``run_edge`` can print a single line and exit 2 instead of failing an hour later in
the upload loop. No Django imports: ``python -m edgeclient`` reads everything it needs
here (the server's p1common.env raises Django's ImproperlyConfigured; the edge starts
without Django), and the bench and the tests build configs directly.
"""

from __future__ import annotations

import builtins
import ipaddress
import math
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgeclient.backoff import BACKOFF_MAX_S as DEFAULT_BACKOFF_MAX_S
from edgeclient.homewizard import MeterConfig, MeterConfigError

# How often run_edge logs its progress line (uploaded, pending, oldest pending).
DEFAULT_PROGRESS_INTERVAL_S = 300.0

DEFAULT_SPOOL_PATH = Path("var") / "edge-spool.sqlite3"
# The same default as the server settings' DATA_DIR: var/ in the checkout.
DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "var"
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_POLL_INTERVAL_S = 2.0
DEFAULT_UPLOAD_INTERVAL_S = 10.0
DEFAULT_BATCH_SIZE = 30
# While a backlog is deeper than one batch the uploader sends this many per request: a
# day offline (43,200 samples at 2 s) then drains in a few dozen requests.
DEFAULT_DRAIN_BATCH_SIZE = 1000
# The server's default INGEST_MAX_BATCH; larger would only earn 413s.
MAX_BATCH_SIZE = 5000


class ConfigError(ValueError):
    """A configuration value is unusable; the message starts with the variable's name."""


@dataclass(frozen=True)
class EdgeConfig:
    ingest_url: str
    device_token: str
    ca_bundle: Path | None
    spool_path: Path
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    upload_interval_s: float = DEFAULT_UPLOAD_INTERVAL_S
    batch_size: int = DEFAULT_BATCH_SIZE
    drain_batch_size: int = DEFAULT_DRAIN_BATCH_SIZE
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S
    meter: MeterConfig | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, *, meter: bool = True) -> EdgeConfig:
        """VPS_INGEST_URL, VPS_DEVICE_TOKEN, VPS_CA_BUNDLE, EDGE_SPOOL_PATH, POLL_INTERVAL_S,
        UPLOAD_INTERVAL_S, BATCH_SIZE, DRAIN_BATCH_SIZE, BACKOFF_MAX_S, EDGE_PROGRESS_INTERVAL_S
        and, with ``meter``,
        the HW_P1_* variables of MeterConfig. Raises ConfigError naming the variable."""
        env = _Env(environ)
        url = env.str("VPS_INGEST_URL")
        if url is None:
            raise ConfigError(
                "VPS_INGEST_URL: required (the server's base URL, https://your-server)"
            )
        url = ingest_endpoint(url)
        token = env.str("VPS_DEVICE_TOKEN")
        if token is None:
            raise ConfigError("VPS_DEVICE_TOKEN: required (an ingest token from the server)")
        if any(ch.isspace() for ch in token):
            raise ConfigError("VPS_DEVICE_TOKEN: must not contain spaces")
        ca_bundle = None
        if (bundle := env.str("VPS_CA_BUNDLE")) is not None:
            ca_bundle = Path(bundle)
            check_ca_bundle(ca_bundle)
        batch_size = env.int("BATCH_SIZE", DEFAULT_BATCH_SIZE, 1, MAX_BATCH_SIZE)
        drain = env.int("DRAIN_BATCH_SIZE", DEFAULT_DRAIN_BATCH_SIZE, 1, MAX_BATCH_SIZE)
        meter_config = None
        if meter:
            try:
                meter_config = MeterConfig.from_env(environ)
            except MeterConfigError as exc:
                raise ConfigError(str(exc)) from None
        return cls(
            ingest_url=url,
            device_token=token,
            ca_bundle=ca_bundle,
            spool_path=spool_path_from_env(environ),
            poll_interval_s=env.seconds("POLL_INTERVAL_S", DEFAULT_POLL_INTERVAL_S),
            upload_interval_s=env.seconds("UPLOAD_INTERVAL_S", DEFAULT_UPLOAD_INTERVAL_S),
            batch_size=batch_size,
            drain_batch_size=max(drain, batch_size),
            backoff_max_s=env.seconds("BACKOFF_MAX_S", DEFAULT_BACKOFF_MAX_S),
            progress_interval_s=env.seconds(
                "EDGE_PROGRESS_INTERVAL_S", DEFAULT_PROGRESS_INTERVAL_S
            ),
            meter=meter_config,
        )


def spool_path_from_env(environ: Mapping[str, str] = os.environ) -> Path:
    """EDGE_SPOOL_PATH (default var/edge-spool.sqlite3); edge_status needs nothing else."""
    raw = _Env(environ).str("EDGE_SPOOL_PATH")
    path = Path(raw) if raw is not None else DEFAULT_SPOOL_PATH
    if path.is_dir():
        raise ConfigError(f"EDGE_SPOOL_PATH: {str(path)!r} is a directory, expected a file")
    return path


def data_dir_from_env(environ: Mapping[str, str] = os.environ) -> Path:
    """DATA_DIR (default var/ in the checkout): where hw_pair keeps the pinned meter
    certificate and simulate_p1 its certificates, as under the Django settings."""
    raw = _Env(environ).str("DATA_DIR")
    return Path(raw) if raw is not None else DEFAULT_DATA_DIR


def log_level_from_env(environ: Mapping[str, str] = os.environ) -> str:
    """LOG_LEVEL (debug, info, warning or error; default info), as a logging level name."""
    return _Env(environ).choice("LOG_LEVEL", LOG_LEVELS, "info").upper()


INGEST_PATH = "/v1/ingest"


def ingest_endpoint(url: str) -> str:
    """The URL to POST batches to, from VPS_INGEST_URL: the server's base URL
    (``https://host`` or ``https://host/prefix``, the original contract: the uploader
    POSTs to ``{base}/v1/ingest``), its API root (``.../v1``) or the full ``.../v1/ingest``
    URL, each with or without a trailing slash. Raises ConfigError like check_ingest_url.
    """
    check_ingest_url(url)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigError(
            f"VPS_INGEST_URL: expected the server's base URL without ?query or #fragment, "
            f"got {url!r}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(INGEST_PATH):
        path = path.removesuffix("/v1") + INGEST_PATH
    return parts._replace(path=path).geturl()


def check_ingest_url(url: str) -> None:
    """https:// anywhere; plain http:// only to a loopback address (development)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"VPS_INGEST_URL: not a valid URL: {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"VPS_INGEST_URL: expected https://host (the server), got {url!r}")
    if parts.username or parts.password:
        raise ConfigError("VPS_INGEST_URL: must not carry credentials (use VPS_DEVICE_TOKEN)")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(
            f"VPS_INGEST_URL: plain http is only allowed to a loopback address, got "
            f"{parts.hostname!r}; use https://"
        )


def is_loopback(hostname: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves this machine."""
    name = hostname.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_ca_bundle(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"VPS_CA_BUNDLE: no such file {str(path)!r}")
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"VPS_CA_BUNDLE: not a PEM certificate bundle: {exc}") from None


# The readers are named after the type they read (tests/test_deploy_files.py finds the
# variables read through those names); in the class body str and int are then these
# methods, so the annotations name the builtins.
class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def str(self, name: builtins.str) -> builtins.str | None:
        return (self._environ.get(name) or "").strip() or None

    def choice(
        self,
        name: builtins.str,
        choices: tuple[builtins.str, ...],
        default: builtins.str,
    ) -> builtins.str:
        value = (self.str(name) or default).lower()
        if value not in choices:
            raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
        return value

    def int(self, name: builtins.str, default: int, minimum: int, maximum: int) -> int:
        raw = self.str(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a whole number, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise ConfigError(f"{name}: must be from {minimum} to {maximum}, got {value}")
        return value

    def seconds(self, name: builtins.str, default: float) -> float:
        raw = self.str(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a number of seconds, got {raw!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(f"{name}: must be a positive number of seconds, got {raw!r}")
        return value
