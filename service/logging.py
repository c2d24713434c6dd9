"""Structured (JSON lines) logging for every process."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# the keys every line has; an ``extra`` field of the same name is written as
# ``extra_<name>`` instead of replacing it (``extra={"event": ...}`` once replaced the
# message, so "notification sent" never reached the log)
BASE_KEYS = ("ts", "level", "logger", "event", "exc")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[f"extra_{key}" if key in BASE_KEYS else key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not to the stream that
    was current at configuration time (which may be closed by then, e.g. a replaced one)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure(level: str = "INFO", json_lines: bool = True) -> None:
    """Send logs to stderr, one JSON object per line (or plain text)."""
    handler = _StderrHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def get_logger(name: str) -> logging.Logger:
    """Log with context as keyword fields: ``log.info("scored", extra={"model": m})``."""
    return logging.getLogger(name)
