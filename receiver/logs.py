"""Structured logging: one line per event, JSON in production, key=value text in development."""

from __future__ import annotations

import collections
import contextlib
import contextvars
import itertools
import json
import logging
import os
import re
import sys
import threading
import time
import weakref
from datetime import datetime, timezone
from typing import TextIO

from receiver.randomness import random_bytes

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
    return random_bytes(16).hex()


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


# What would break a line in two for a reader of the log (Python's str.splitlines, log shippers):
# written as escapes, so a value from a request (a path, a query parameter) cannot forge a line.
_LINE_BREAKERS = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


_JSON_LINE_BREAKERS = re.compile("[\x85\u2028\u2029]")


def _escape(match: re.Match) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def one_line(text: str) -> str:
    """`text` with every control character and line separator escaped (`\\n`, `\\x85`, `\\u2028`)."""
    if text.isprintable():  # most lines: none of them (all are unprintable), checked in C
        return text
    return _LINE_BREAKERS.sub(_escape, text)


# How many attributes `LogRecord.__init__` sets: a record's `extra` fields (and those filters
# add) come after them in its __dict__, which keeps the order they were set in.
_INIT_ATTRIBUTES = len(vars(logging.makeLogRecord({})))


def _extras(record: logging.LogRecord) -> dict:
    # Only the attributes set after __init__'s are looked at (a dozen, not thirty): the rest
    # are all standard ones.
    return {k: v for k, v in itertools.islice(vars(record).items(), _INIT_ATTRIBUTES, None)
            if k not in _STANDARD and not k.startswith("_")}


class _SecondStamps:
    """A record's time, spelled by `spell` (a UTC `datetime` → str) once per second and then
    reused with the record's milliseconds appended (as `logging.Formatter.formatTime` does):
    `datetime.fromtimestamp` and `strftime` were a quarter of a line's formatting."""

    def __init__(self, spell) -> None:
        self._spell = spell
        self._cached: tuple[int, str] = (-1, "")

    def __call__(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        cached_second, prefix = self._cached  # one tuple, read and replaced whole: no lock needed
        if second != cached_second:
            prefix = self._spell(datetime.fromtimestamp(second, tz=timezone.utc))
            self._cached = (second, prefix)
        return f"{prefix}.{int(record.msecs):03d}"


# One encoder for every line (json.dumps builds one per call when given `default`).
_LINE_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


class JSONFormatter(logging.Formatter):
    _stamp = _SecondStamps(lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S"))

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": self._stamp(record) + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        # json escapes the ASCII controls; not U+0085, U+2028 and U+2029 (ensure_ascii=False).
        text = _LINE_ENCODER.encode(out)
        if not text.isascii():  # an ASCII line (most) holds none of them
            text = _JSON_LINE_BREAKERS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
        return mask_secrets(text)


class TextFormatter(logging.Formatter):
    _stamp = _SecondStamps(lambda moment: moment.strftime("%H:%M:%S"))

    def format(self, record: logging.LogRecord) -> str:
        ts = self._stamp(record)
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{ts} {record.levelname:<7} {record.name}: {record.getMessage()}" + (f"  {extras}" if extras else "")
        if record.exc_info:  # one line too: the traceback's line breaks written as \n
            line += "  exc=" + self.formatException(record.exc_info)
        return mask_secrets(one_line(line))


class LineWriter(logging.Handler):
    """Write formatted lines to `stream`, INFO and below within `interval` seconds, in batches.

    A request thread formats its line, outside any lock, and queues it; a thread of the
    handler's own writes whatever has queued every `interval` seconds, in one write. Writing
    each line itself, a request thread held the handler's lock across a system call that gives
    up the interpreter lock, so under load the next thread to log blocked on the handler's lock
    and the writer then queued for the interpreter lock again: a context switch or two per
    access line, on the busiest path (bench/README).

    A WARNING or above is written at once, after every line queued before it, by the thread
    that logs it. `flush` (which `logging.shutdown` calls at exit, and a fork calls first)
    writes what is queued; a process killed outright loses at most `interval` seconds of lines
    below WARNING.
    """

    def __init__(self, stream: TextIO, interval: float = 0.1) -> None:
        super().__init__()
        self.stream = stream
        self.interval = interval
        self._queue: collections.deque[str] = collections.deque()  # append and popleft are atomic
        self._write_lock = threading.Lock()  # one writer at a time, so queued lines keep their order
        self._thread: threading.Thread | None = None
        self._closed = False
        _line_writers.add(self)

    def handle(self, record: logging.LogRecord) -> bool:
        # As logging.Handler.handle, without the handler lock around `emit`: nothing here needs it.
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or self._closed:
            with self._write_lock:
                self._write_queued(line)
            return
        self._queue.append(line)
        thread = self._thread
        if thread is None or not thread.is_alive():  # not started yet, or this is a forked child
            self._start()

    def flush(self) -> None:
        with self._write_lock:
            self._write_queued()

    def close(self) -> None:
        self._closed = True
        self.flush()
        super().close()

    def _start(self) -> None:
        with self._write_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            time.sleep(self.interval)
            self.flush()

    def _write_queued(self, last: str = "") -> None:
        """Write the queued lines, then `last`; the caller holds the write lock."""
        queue, parts = self._queue, []
        while queue:  # only writers, under the write lock, take from the queue
            parts.append(queue.popleft())
        if last:
            parts.append(last)
        if not parts:
            return
        try:
            self.stream.write("".join(parts))
            self.stream.flush()
        except Exception:  # as logging.Handler.handleError: say so on the process's stderr, if it can
            if logging.raiseExceptions and sys.__stderr__ is not None:
                with contextlib.suppress(Exception):
                    sys.__stderr__.write(f"--- Logging error: {len(parts)} lines could not be written ---\n")


_line_writers: weakref.WeakSet[LineWriter] = weakref.WeakSet()


def _flush_line_writers() -> None:
    for writer in list(_line_writers):
        writer.flush()


def _reset_line_writers_in_child() -> None:
    for writer in list(_line_writers):
        writer._write_lock = threading.Lock()  # another of the parent's threads may have held it
        writer._queue.clear()  # queued between the flush and the fork: the parent writes them
        writer._thread = None


# Lines queued before a fork are written once, by the parent; the child starts with none.
os.register_at_fork(before=_flush_line_writers, after_in_child=_reset_line_writers_in_child)


def configure_logging(config) -> None:
    """Install our formatter on the root logger once per process."""
    handler = LineWriter(sys.stderr)
    handler.setFormatter(JSONFormatter() if config.log_format == "json" else TextFormatter())
    handler.set_name("receiver")
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "receiver"]:
        root.removeHandler(old)
        old.close()
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
