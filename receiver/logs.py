"""Structured logging: one line per event, JSON in production, key=value text in development."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid
from datetime import datetime, timezone

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

# Belt and braces: whatever slips into a message, these never leave the process.
_SECRET_PATTERNS = [
    re.compile(r"(usersig=)[^&\s\"']+", re.I),
    re.compile(r"(Sign=)[0-9a-fA-F]{16,}", re.I),
    re.compile(r"(Bearer\s+)[^\s\"']+", re.I),
    re.compile(r"([?&]token=)[^&\s\"']+", re.I),
]

# The id of the HTTP request being handled in this thread/context, stamped on every log line.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")


def request_id_from(header: str | None) -> str:
    """The caller's X-Request-ID when it is short and plain, else a fresh one (never echo junk)."""
    if header and _SANE_REQUEST_ID.fullmatch(header.strip()):
        return header.strip()
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Add `request_id` to records logged while a request is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = request_id_var.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


# Case-folded fragments each pattern needs: a line with none of them is returned as it is
# (most lines), without running the patterns.
_SECRET_HINTS = ("usersig=", "sign=", "bearer", "token=")


def mask_secrets(text: str) -> str:
    folded = text.casefold()
    if not any(hint in folded for hint in _SECRET_HINTS):
        return text
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(r"\1***", text)
    return text


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return mask_secrets(json.dumps(out, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}" + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return mask_secrets(line)


def configure_logging(config) -> None:
    """Install our formatter on the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if config.log_format == "json" else TextFormatter())
    handler.set_name("receiver")
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "receiver"]
    root.addHandler(handler)
    root.setLevel(config.log_level)
    # No formatter here (ours, gunicorn's) prints the caller's file and line, the thread or the
    # multiprocessing name: skip collecting them for every record (the logging HOWTO's
    # "Optimization" switches). gunicorn's lines print the process id, which stays.
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
