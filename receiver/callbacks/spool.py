"""A local durable spool for callbacks that arrive while the database is unreachable.

Each process appends to its own segment file (one JSON line per request, flushed and fsynced
before IM is answered) and holds an exclusive `flock` on it while it writes. A drainer — any
process — takes segments nobody holds, oldest first, feeds each line through the same code the
endpoint uses (so the dedupe key makes a re-drain harmless), and deletes the segment when done.
A line torn by a crash was never acknowledged and is skipped.
"""

from __future__ import annotations

import base64
import fcntl
import itertools
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from receiver.callbacks.service import RequestMeta

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"
_segment_numbers = itertools.count()


@dataclass(frozen=True)
class SpooledRequest:
    received_at: datetime
    meta: RequestMeta
    raw_body: bytes

    def to_line(self) -> bytes:
        doc = {"received_at": self.received_at.isoformat(), "meta": asdict(self.meta),
               "body": base64.b64encode(self.raw_body).decode("ascii")}
        return json.dumps(doc, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> "SpooledRequest":
        doc = json.loads(line)
        return cls(datetime.fromisoformat(doc["received_at"]), RequestMeta(**doc["meta"]),
                   base64.b64decode(doc["body"]))


class Spool:
    """The spool directory of one process: append here, drain everyone's."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self._clock = clock
        self._lock = threading.Lock()
        self._segment: Path | None = None
        self._fd: int | None = None
        self._segment_pid: int | None = None

    # -- writing --------------------------------------------------------------------------------

    def append(self, item: SpooledRequest) -> None:
        """Write one request durably (returns only after fsync).

        A write that fails part way (disk full) raises, and takes back what it wrote: left in
        place, the fragment would be glued to the next request's line, which would then be
        acknowledged and never drained. If even that fails, the segment is closed, so the next
        request starts a new one and the fragment stays a torn line of its own.
        """
        line = item.to_line()
        with self._lock:
            fd = self._writer_fd()
            start = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:  # a short write (disk full) must not be acknowledged as written
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    os.close(fd)
                    self._fd = self._segment = self._segment_pid = None
                raise

    def check(self) -> None:
        """Make the directory and write, fsync and remove a file there; OSError if it cannot be done."""
        self.directory.mkdir(parents=True, exist_ok=True)
        probe = self.directory / f".probe-{os.getpid()}-{os.urandom(3).hex()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)

    def _writer_fd(self) -> int:
        if self._fd is not None and self._segment_pid == os.getpid():
            return self._fd
        self.directory.mkdir(parents=True, exist_ok=True)
        # Names sort in the order a process opened its segments: by millisecond, then (segments
        # opened within one millisecond, as after a failed write) by the process's own count.
        name = (f"{int(self._clock() * 1000):013d}-{os.getpid()}-{next(_segment_numbers):08d}-{os.urandom(3).hex()}"
                f"{SEGMENT_SUFFIX}")
        path = self.directory / name
        # Locked before it bears a segment name, so no drainer can take (and delete) it meanwhile.
        temporary = path.with_name(path.name + ".new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # ours while we write; released on close or death
        os.rename(temporary, path)
        _fsync_dir(self.directory)
        self._segment, self._fd, self._segment_pid = path, fd, os.getpid()
        return fd

    def close_segment(self) -> None:
        """Stop writing the current segment so a drainer may take it."""
        with self._lock:
            if self._fd is not None and self._segment_pid == os.getpid():
                os.close(self._fd)
            self._fd = self._segment = self._segment_pid = None

    # -- draining -------------------------------------------------------------------------------

    def segments(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.endswith(SEGMENT_SUFFIX))

    def depth(self) -> int:
        """Requests waiting in the spool (lines in all segments)."""
        total = 0
        for path in self.segments():
            try:
                with open(path, "rb") as f:
                    total += sum(1 for line in f if line.endswith(b"\n"))
            except FileNotFoundError:
                continue
        return total

    def drain(self, handle: Callable[[SpooledRequest], None],
              retry_later: Callable[[BaseException], bool] = lambda exc: True) -> int:
        """Feed every spooled request nobody is writing to `handle`, oldest first; return how many.

        `handle` must raise if the database is still unreachable: the segment is then kept, and
        the lines already handled are skipped next time (`.done` sidecar).
        """
        drained = 0
        for path in self.segments():
            if path == self._segment:
                self.close_segment()  # our own: we are draining, so the database is back
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another process writes or drains it
                if os.fstat(fd).st_nlink == 0:
                    continue  # another drainer finished and removed it while we waited
                done_path = path.with_name(path.name + ".done")
                skip = int(done_path.read_text() or 0) if done_path.exists() else 0
                for index, line in enumerate(_lines(fd)):
                    if index < skip:
                        continue
                    if not line.endswith(b"\n"):
                        log.warning("skipping a torn spool line", extra={"segment": path.name})
                        break
                    try:
                        item = SpooledRequest.from_line(line)
                    except (ValueError, KeyError, TypeError):
                        log.error("unreadable spool line kept aside", extra={"segment": path.name, "line": index})
                        _keep_aside(path, line)
                        done_path.write_text(str(index + 1))
                        continue
                    try:
                        handle(item)
                    except Exception as exc:
                        if retry_later(exc):
                            raise  # the database is still away: keep the rest for later
                        # Anything else would block every later callback: set this one aside.
                        log.exception("spooled callback set aside", extra={"segment": path.name, "line": index})
                        _keep_aside(path, line)
                    drained += 1
                    done_path.write_text(str(index + 1))
                path.unlink(missing_ok=True)
                done_path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return drained


def _lines(fd: int) -> Iterator[bytes]:
    with os.fdopen(os.dup(fd), "rb") as f:
        f.seek(0)
        yield from f


def _keep_aside(path: Path, line: bytes) -> None:
    with open(path.with_name(path.name + ".bad"), "ab") as f:
        f.write(line)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
