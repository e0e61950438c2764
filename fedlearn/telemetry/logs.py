"""One log format for every process: the API (and gunicorn's own lines), trainers, Celery.

``FEDLEARN_LOG_FORMAT=text`` writes a line for people; ``json`` writes one JSON object a line
(python-json-logger) for a log shipper, with the ``extra`` fields of a record (the access
log's ``request_id``, ``status``, ``duration_ms``) as keys of their own. The same dictConfig
is handed to gunicorn (``logconfig_dict``), so its master and workers log alike.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger", "process": "pid"}


def logging_dict(log_format: str, level: str) -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` for ``log_format`` (text or json) at ``level``."""
    if log_format == "json":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "rename_fields": JSON_RENAMES,
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "fedlearn",
        "stream": "ext://sys.stderr",
    }
    # gunicorn's error log in our format; its access log off: ours (fedlearn.access) has the
    # request id and leaves out the query string, where the demo page's token travels.
    ours = {"handlers": ["fedlearn"], "level": level, "propagate": False}
    off = {"handlers": [], "level": "CRITICAL", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"fedlearn": formatter},
        "handlers": {"fedlearn": handler},
        "root": {"handlers": ["fedlearn"], "level": level},
        "loggers": {"gunicorn.error": ours, "gunicorn.access": off},
    }


def configure_logging(log_format: str, level: str) -> None:
    """Install the format on the root logger of this process (idempotent)."""
    logging.config.dictConfig(logging_dict(log_format, level))
