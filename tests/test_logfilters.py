"""A cache outage is logged as one warning line per ignored error, not a traceback."""

from __future__ import annotations

import logging

from django_redis.cache import RedisCache

from p1common.services import free_port


def test_an_ignored_cache_error_is_one_warning_line_naming_it(settings, caplog):
    settings.DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
    # Nothing listens on this port: every call fails to connect.
    cache = RedisCache(
        f"redis://127.0.0.1:{free_port()}/0",
        {"OPTIONS": {"IGNORE_EXCEPTIONS": True, "SOCKET_CONNECT_TIMEOUT": 1}},
    )
    with caplog.at_level(logging.WARNING, logger="django_redis.cache"):
        assert cache.get("realtime:home-p1") is None
    (record,) = [r for r in caplog.records if r.name == "django_redis.cache"]
    assert record.levelname == "WARNING"
    assert record.exc_info is None
    message = record.getMessage()
    assert message.startswith("cache unavailable, served without it: ConnectionError:")
    assert "\n" not in message


def test_at_log_level_error_the_lowered_line_is_not_printed(settings, caplog):
    # As with LOG_LEVEL=ERROR: the logger admits ERROR records, and the handlers (like
    # the console's) take whatever reaches them.
    settings.DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
    logger = logging.getLogger("django_redis.cache")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        cache = RedisCache(
            f"redis://127.0.0.1:{free_port()}/0",
            {"OPTIONS": {"IGNORE_EXCEPTIONS": True, "SOCKET_CONNECT_TIMEOUT": 1}},
        )
        assert cache.get("realtime:home-p1") is None
    finally:
        logger.setLevel(level)
    assert caplog.handler.level == logging.NOTSET
    assert [r for r in caplog.records if r.name == "django_redis.cache"] == []
