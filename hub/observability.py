"""JSON logs for every process; a record carries ids and codes, never message payloads or PII."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

# LogRecord attributes that are plumbing, not content.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: exception messages can echo request data.
            doc["error"] = record.exc_info[0].__name__
        return orjson.dumps(doc).decode()


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A dictConfig for uvicorn, faust and the hub's own loggers, all in JSON on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
            # Access logs carry URLs with ids only, but they are noise at this volume.
            "uvicorn.access": {"handlers": [], "level": "ERROR", "propagate": False},
            "aiokafka": {"level": "WARNING"},
            "kafka": {"level": "WARNING"},
        },
    }
