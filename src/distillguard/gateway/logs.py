"""The gateway's logs: one configuration for distillguard's own lines and uvicorn's, as text
or as JSON lines (for a log pipeline), on stderr, in every worker process."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, logger, message, and the
    traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def log_config(json_lines: bool, access_log: bool) -> dict[str, Any]:
    """A `logging.config.dictConfig` document, handed to uvicorn (which applies it in each
    worker): distillguard at INFO, uvicorn's own lines at WARNING, its access log at INFO
    when asked for (the event log is the full record of every request either way)."""
    formatter = {"()": f"{__name__}.JsonFormatter"} if json_lines else {"format": TEXT_FORMAT}

    def logger(level: str) -> dict[str, Any]:
        return {"handlers": ["stderr"], "level": level, "propagate": False}

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "distillguard": logger("INFO"),
            "uvicorn": logger("WARNING"),
            "uvicorn.error": logger("WARNING"),
            "uvicorn.access": logger("INFO" if access_log else "WARNING"),
        },
    }
