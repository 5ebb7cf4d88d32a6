"""Settings: every value comes from the environment, read once here.

P1_ROLE=edge loads only what ``manage.py run_edge`` and friends need, so the edge runs
with the edge requirements alone (no DRF, psycopg or redis on a Raspberry Pi). Without
P1_ROLE the edge settings are chosen where the server packages are missing, and by
manage.py for the edge commands (p1platform/roles.py).
"""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from p1common.env import (
    database_from_url,
    env_bool,
    env_choice,
    env_device_tokens,
    env_int,
    env_list,
    env_networks,
    env_rate,
    env_str,
    replica_from_url,
)
from p1common.replica import REPLICA_ALIAS
from p1platform import roles

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var")))

ROLE = env_choice("P1_ROLE", roles.ROLES, roles.default_role())
DJANGO_ENV = env_choice("DJANGO_ENV", ("development", "production"), "development")
PRODUCTION = DJANGO_ENV == "production"

DEBUG = env_bool("DEBUG", default=False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG: must be false when DJANGO_ENV=production")

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY: required when DJANGO_ENV=production")
    # Development only: a fixed key keeps sessions valid across workers and restarts.
    SECRET_KEY = "django-insecure-development-key-never-use-in-production"  # noqa: S105
elif PRODUCTION and (len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5):
    raise ImproperlyConfigured("SECRET_KEY: must be at least 50 random characters in production")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS: required when DJANGO_ENV=production")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

TIME_ZONE = "UTC"
USE_TZ = True
USE_I18N = False
LANGUAGE_CODE = "en"
DEFAULT_DEVICE_TIMEZONE = env_str("DEFAULT_DEVICE_TIMEZONE", "Europe/Brussels")
# What a month without any figure counts in the 12-month average (capacity.provenance):
# "floor" 2.5 kW (flagged), or "exclude" (the average of the months that have one).
CAPACITY_MISSING_MONTH = env_choice("CAPACITY_MISSING_MONTH", ("floor", "exclude"), "floor")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOG_LEVEL = env_choice("LOG_LEVEL", ("debug", "info", "warning", "error"), "info").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "filters": {"cache_errors": {"()": "p1platform.logfilters.CacheErrorsOnOneLine"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # httpx logs every request at INFO: one line per poll and upload is noise.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # A Redis outage: one line per ignored error instead of a traceback each.
        "django_redis.cache": {"filters": ["cache_errors"]},
    },
}

if ROLE == "edge":
    # Only for manage.py run_edge and friends; ``python -m edgeclient`` needs no Django.
    INSTALLED_APPS = ["edgeclient"]
    DATABASES: dict = {}
    # The server's URLs import DRF, which the edge does not install.
    ROOT_URLCONF = "p1platform.urls_edge"
else:
    INSTALLED_APPS = [
        "django.contrib.admin",
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "django.contrib.sessions",
        "django.contrib.messages",
        "django.contrib.staticfiles",
        "rest_framework",
        # OpenAPI schema and its docs; the sidecar serves Swagger UI from our static files.
        "drf_spectacular",
        "drf_spectacular_sidecar",
        "telemetry",
        "capacity",
        "peakguard",
        # Data out: CSV export, /metrics, MQTT, health alerts (docs/INTEGRATIONS.md).
        "integrations",
        # No edgeclient: the wire format the server shares with the edge is p1wire, and
        # manage.py runs the edge's commands under the edge settings (p1platform/roles.py).
        "dashboard",
        "demo",
    ]
    DATABASES = {
        "default": database_from_url(
            "DATABASE_URL",
            env_str("DATABASE_URL"),
            sqlite_default=DATA_DIR / "p1platform.sqlite3",
        )
    }
    if not env_str("DATABASE_URL"):
        # The embedded default must work from a fresh clone, where var/ does not exist.
        DATA_DIR.mkdir(parents=True, exist_ok=True)
    # Optional: a streaming replica of DATABASE_URL that serves the history and capacity
    # reads (p1common/replica.py says which, and why the rest stays on the primary).
    _replica = replica_from_url(
        "DATABASE_REPLICA_URL", env_str("DATABASE_REPLICA_URL"), DATABASES["default"]
    )
    if _replica is not None:
        DATABASES[REPLICA_ALIAS] = _replica
        DATABASE_ROUTERS = ["p1platform.dbrouter.ReplicaRouter"]

# TimescaleDB: "auto" uses it when the server can load it, "off" never does, "require"
# fails the migration when it is missing (production images that must have it).
TIMESCALEDB = env_choice("TIMESCALEDB", ("auto", "off", "require"), "auto")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "p1common.problems.ProblemDetailsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

if ROLE == "server":
    ROOT_URLCONF = "p1platform.urls"
    # Static files from the app itself, so the dashboard works behind any proxy (or none)
    # and on a LAN without internet access. Only the server installs whitenoise.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")
    # Outermost: it times the whole answer (integrations.metrics; the server's only).
    MIDDLEWARE.insert(0, "integrations.metrics.MetricsMiddleware")
WSGI_APPLICATION = "p1platform.wsgi.application"
ASGI_APPLICATION = "p1platform.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(DATA_DIR / "static")))
if PRODUCTION:
    # Hashed, compressed file names from collectstatic (the deploy runs it at start):
    # browsers may cache them for good.
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }
else:
    # Development and tests serve the apps' static folders directly, no collectstatic.
    WHITENOISE_USE_FINDERS = True
    if ROLE == "server":
        # whitenoise also indexes STATIC_ROOT, and warns on every start while it is missing.
        STATIC_ROOT.mkdir(parents=True, exist_ok=True)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# Cache: Redis when REDIS_URL is set, else local memory. Redis errors are swallowed
# (django-redis IGNORE_EXCEPTIONS): a cache outage must never fail a request.
# The edge keeps its state in its spool, never in a cache: it ignores REDIS_URL.
REDIS_URL = env_str("REDIS_URL") if ROLE == "server" else ""
# The realtime answer's lifetime at most. It depends on the data alone (its age is added
# when served), and every change of that data drops it at once: a stored batch, the
# worker's steps, a capacity rebuild (capacity.realtime). So it can live long; each
# expiry costs an open dashboard a recomputation.
CACHE_TTL_S = env_int("CACHE_TTL_S", 300, minimum=0)
# Seconds a series answer is kept at most (0: not cached). A stored batch drops the
# answers it changes at once (telemetry.series_cache); this bounds everything else.
SERIES_CACHE_TTL_S = env_int("SERIES_CACHE_TTL_S", 300, minimum=0)
REDIS_TIMEOUT_S = 0.25
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(f"REDIS_URL: expected redis://host:port/db, got {REDIS_URL!r}")
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "p1",
            "TIMEOUT": 300,
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "IGNORE_EXCEPTIONS": True,
                "SOCKET_CONNECT_TIMEOUT": REDIS_TIMEOUT_S,
                "SOCKET_TIMEOUT": REDIS_TIMEOUT_S,
            },
        }
    }
    DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Token lookups are cached only in a shared cache: a per-process cache could not be told
# that another process revoked a token. Any token change reaches every process at once
# (the generation, telemetry.token_cache); the lifetime only bounds a change made behind
# the ORM's back, and must exceed the time between two batches of one household in one
# process, or every household's token is read from the database again and again.
TOKEN_CACHE_TTL_S = env_int("TOKEN_CACHE_TTL_S", 900 if REDIS_URL else 0, minimum=0)
if TOKEN_CACHE_TTL_S and not REDIS_URL:
    raise ImproperlyConfigured("TOKEN_CACHE_TTL_S: needs REDIS_URL (a cache every process shares)")

# Tokens each process keeps: every household's, so a full server never reads one from
# the database per request (docs/SCALING.md has the memory each costs).
TOKEN_CACHE_ENTRIES = env_int("TOKEN_CACHE_ENTRIES", 20000, minimum=1)
# device_id:token pairs, comma-separated: `manage.py provision_device_tokens` (run at
# every start by the container's entrypoint and the systemd unit) creates each device and
# token (hash only, scopes ingest and read) and revokes those it made that left the list.
DEVICE_TOKENS = env_device_tokens("DEVICE_TOKENS") if ROLE == "server" else []

INGEST_MAX_BATCH = env_int("INGEST_MAX_BATCH", 5000, minimum=1)
# A sample with every field is about 750 bytes of JSON; allow twice that per sample.
INGEST_MAX_BODY_BYTES = INGEST_MAX_BATCH * 1536 + 4096
DATA_UPLOAD_MAX_MEMORY_SIZE = INGEST_MAX_BODY_BYTES
# What follows a stored batch, in order (telemetry.pipeline): the capacity quarters, the
# stored series blocks, the cached realtime and series answers (one Redis round trip,
# after the blocks they may have been built from), the peak guard. Each is called with
# the telemetry.pipeline StoredBatch spans of a chunk of devices, inside their commit.
INGEST_STEPS = [
    "capacity.materialize.refresh_after_batches",
    "telemetry.series_blocks.forget_after_batches",
    "capacity.realtime.forget_after_batches",
    "peakguard.evaluate.check_after_batches",
]
# With the worker: what a batch that added rows still does in its own request, after
# its commit, so the live reading is fresh at once (without it INGEST_STEPS run there):
# the realtime answer made from the batch where it only appends to the running quarter,
# else dropped. The series answers it touches dropped too; INGEST_STEPS drop them again
# after TimescaleDB refreshed an old window (telemetry.series_cache).
INGEST_RECEIPT_STEPS = [
    "capacity.realtime.refresh_after_receipt",
]
# on: the request stores the batch and its record of INGEST_STEPS owed, and the
# ingest-steps worker (manage.py run_ingest_steps) does them every
# INGEST_STEPS_INTERVAL_S for many batches at once; capacity answers and peak-guard
# alerts are then late by at most the interval and one cycle (docs/SCALING.md).
# off: each request does its own, before it answers.
INGEST_STEPS_WORKER = env_bool("INGEST_STEPS_WORKER", default=False)
INGEST_STEPS_INTERVAL_S = env_int("INGEST_STEPS_INTERVAL_S", 60, minimum=1)
# The share of a worker cycle's time spent working (percent): it rests after each chunk
# so the live path keeps the rest of the machine, and ends within half the interval
# when its work permits (telemetry.pacing; 100: chunks back to back).
INGEST_STEPS_DUTY_PERCENT = env_int("INGEST_STEPS_DUTY_PERCENT", 50, minimum=1, maximum=100)
INGEST_THROTTLE_RATE = env_rate("INGEST_THROTTLE_RATE", "600/min")
# Failed token checks one client address may make before its Bearer requests get 429
# for the rest of the period (telemetry.auth); "off" disables.
BAD_TOKEN_RATE = env_rate("BAD_TOKEN_RATE", "30/min")
# Peers whose X-Real-IP names the client (Caddy sets it); the same variable tells
# gunicorn whose X-Forwarded-* to trust. "*" trusts every peer.
TRUSTED_PROXIES = env_list("FORWARDED_ALLOW_IPS", ["127.0.0.1", "::1"])
# How long a client should wait before retrying when the database is unreachable.
DB_RETRY_AFTER_S = env_int("DB_RETRY_AFTER_S", 15, minimum=1)

# Raw samples are kept this many months (0 or unset: forever); `manage.py prune_samples`
# deletes older ones (telemetry.retention). Quarters, hours, capacity months and register
# breaks are kept forever. The 12-month average needs 12 whole months and the running one.
RAW_SAMPLE_RETENTION_MONTHS = env_int("RAW_SAMPLE_RETENTION_MONTHS", 0, minimum=0)
if 0 < RAW_SAMPLE_RETENTION_MONTHS < 13:
    raise ImproperlyConfigured(
        "RAW_SAMPLE_RETENTION_MONTHS: must be 0 (keep forever) or at least 13 (the tariff's "
        f"12 months and the running one), got {RAW_SAMPLE_RETENTION_MONTHS}"
    )

# Peak guard webhooks (peakguard/). Targets on loopback, private and link-local
# addresses are refused unless allowed here (development, receivers on the LAN).
PEAKGUARD_ALLOW_PRIVATE_TARGETS = env_bool("PEAKGUARD_ALLOW_PRIVATE_TARGETS", default=False)
# Optional: signs each body (HMAC-SHA256 in X-P1-Signature-256) so receivers can trust it.
PEAKGUARD_WEBHOOK_SECRET = env_str("PEAKGUARD_WEBHOOK_SECRET")
# Seconds before each delivery attempt; checked by peakguard at start-up.
PEAKGUARD_RETRY_DELAYS_S = env_list("PEAKGUARD_RETRY_DELAYS_S", ["0", "5", "30"])
# false: the web processes never send; run `manage.py deliver_peak_alerts` instead.
PEAKGUARD_IN_PROCESS_DELIVERY = env_bool("PEAKGUARD_IN_PROCESS_DELIVERY", default=True)

# /metrics (integrations.metrics, docs/INTEGRATIONS.md): closed (404) unless a scraper
# may present METRICS_TOKEN as a Bearer token or calls from METRICS_ALLOW_IPS
# (addresses or networks, e.g. 127.0.0.1,10.0.0.0/8; behind Caddy, X-Real-IP counts).
METRICS_TOKEN = env_str("METRICS_TOKEN")
if METRICS_TOKEN and len(METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("METRICS_TOKEN: must be at least 32 characters")
METRICS_ALLOW_NETWORKS = env_networks("METRICS_ALLOW_IPS")

# The MQTT publisher (manage.py run_mqtt_publisher; integrations.mqtt): mqtt://host:1883
# or mqtts://user:password@host:8883 (TLS, verified against the system's CAs or
# MQTT_CA_FILE). Only that process reads these; the web processes never connect.
MQTT_URL = env_str("MQTT_URL")
MQTT_CA_FILE = env_str("MQTT_CA_FILE")
MQTT_TOPIC_PREFIX = env_str("MQTT_TOPIC_PREFIX", "p1platform").strip("/")
MQTT_DISCOVERY_PREFIX = env_str("MQTT_DISCOVERY_PREFIX", "homeassistant").strip("/")
MQTT_CLIENT_ID = env_str("MQTT_CLIENT_ID", "p1platform-publisher")
MQTT_PUBLISH_INTERVAL_S = env_int("MQTT_PUBLISH_INTERVAL_S", 10, minimum=1)
# A device whose newest sample is older than this is "offline" on MQTT.
MQTT_STALE_AFTER_S = env_int("MQTT_STALE_AFTER_S", 300, minimum=10)

# Health alerts (manage.py run_health_alerts; integrations.health), sent through the
# device's peak-guard webhook and shown on MQTT: a device with no sample for
# HEALTH_STALE_AFTER_MIN minutes; an edge that uploads readings more than
# HEALTH_BACKLOG_AFTER_MIN minutes old (its spool is backing up). Evaluated every
# HEALTH_CHECK_INTERVAL_S.
HEALTH_STALE_AFTER_MIN = env_int("HEALTH_STALE_AFTER_MIN", 15, minimum=1)
HEALTH_BACKLOG_AFTER_MIN = env_int("HEALTH_BACKLOG_AFTER_MIN", 15, minimum=1)
HEALTH_CHECK_INTERVAL_S = env_int("HEALTH_CHECK_INTERVAL_S", 60, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "telemetry.auth.DeviceTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON first: a client that sends no Accept (or */*) gets JSON; a browser asking for
    # text/html gets the browsable API (logged-in users; errors stay problem+json).
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "p1common.problems.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"ingest": INGEST_THROTTLE_RATE},
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "p1common.openapi.AutoSchema",
}
# /v1/schema and /v1/docs are public (docs/adr/0004): the schema names no device or data.
SPECTACULAR_SETTINGS = {
    "TITLE": "P1 Platform API",
    "DESCRIPTION": "Energy telemetry from HomeWizard P1 meters and the Belgian capacity "
    "tariff. Errors are application/problem+json (RFC 9457).",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    # No authentication on the schema itself: a stale token must not hide the docs.
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "p1common.openapi.add_components",
        "telemetry.openapi.device_links",
    ],
}

# Behind Caddy: it terminates TLS and sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=True)
    # Health checks come from the container runtime over plain HTTP inside the host.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
