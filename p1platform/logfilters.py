"""Logging filters named in settings.LOGGING."""

from __future__ import annotations

import logging


class CacheErrorsOnOneLine(logging.Filter):
    """django-redis logs every ignored cache error with its traceback ("Exception
    ignored"). With the cache down that is one traceback per request, all alike, while
    the request itself is served: a warning line naming the error says all of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            cause = error.__cause__ or error
            record.msg = "cache unavailable, served without it: %s: %s"
            record.args = (type(cause).__name__, cause)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            # The logger let it through as ERROR; as a warning it must pass the level again.
            return logging.getLogger(record.name).isEnabledFor(logging.WARNING)
        return True
