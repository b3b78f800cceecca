"""LineWriter: lines below WARNING are written in batches by a thread of its own; none is lost or torn."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from receiver.logs import LineWriter, TextFormatter

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def writer_logger():
    """A logger of its own with a LineWriter on a StringIO; the writer's own thread never wakes in the test."""
    stream = io.StringIO()
    writer = LineWriter(stream, interval=3600)
    writer.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test.linewriter.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(writer)
    yield logger, writer, stream
    logger.removeHandler(writer)
    writer.close()


def test_a_warning_is_written_at_once_after_the_lines_queued_before_it(writer_logger):
    logger, _, stream = writer_logger
    logger.info("first")
    logger.debug("second")
    logger.warning("third")  # no flush, no wait: written by this call
    assert stream.getvalue() == "INFO first\nDEBUG second\nWARNING third\n"


def test_flush_writes_the_queued_lines_in_order(writer_logger):
    logger, writer, stream = writer_logger
    for n in range(5):
        logger.info("line %d", n)
    writer.flush()
    assert stream.getvalue().splitlines() == [f"INFO line {n}" for n in range(5)]


def test_the_writer_thread_writes_queued_lines_without_being_asked():
    stream = io.StringIO()
    writer = LineWriter(stream, interval=0.01)
    writer.setFormatter(logging.Formatter("%(message)s"))
    record = logging.makeLogRecord({"msg": "by the writer thread", "levelno": logging.INFO, "levelname": "INFO"})
    try:
        writer.handle(record)
        deadline = time.monotonic() + 10
        while not stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.getvalue() == "by the writer thread\n"
    finally:
        writer.close()


def test_many_threads_lose_no_line_and_tear_none(writer_logger):
    logger, writer, stream = writer_logger
    threads_n, lines_n = 8, 500

    def log_lines(t: int) -> None:
        for n in range(lines_n):
            logger.info("thread %d line %d %s", t, n, "x" * 200)

    threads = [threading.Thread(target=log_lines, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.flush()
    lines = stream.getvalue().splitlines()
    assert sorted(lines) == sorted(f"INFO thread {t} line {n} {'x' * 200}" for t in range(threads_n)
                                   for n in range(lines_n))
    for t in range(threads_n):  # each thread's own lines keep their order
        mine = [line for line in lines if line.startswith(f"INFO thread {t} ")]
        assert mine == [f"INFO thread {t} line {n} {'x' * 200}" for n in range(lines_n)]


def test_close_writes_what_is_queued_and_later_lines_go_straight_out(writer_logger):
    logger, writer, stream = writer_logger
    logger.info("queued")
    writer.close()
    assert stream.getvalue() == "INFO queued\n"
    logger.info("after close")
    assert stream.getvalue() == "INFO queued\nINFO after close\n"


def test_a_format_error_is_reported_and_does_not_stop_later_lines(writer_logger, capsys):
    logger, writer, stream = writer_logger
    # Straight to the handler: pytest's own log capture would raise on the bad record first.
    bad = logging.makeLogRecord({"msg": "%d", "args": ("not a number",), "levelno": logging.INFO,
                                 "levelname": "INFO"})
    writer.handle(bad)  # reported on stderr, as logging reports it for any handler
    logger.info("fine")
    writer.flush()
    assert stream.getvalue() == "INFO fine\n"
    assert "Logging error" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_write_its_parents_queued_lines_again(tmp_path):
    path = tmp_path / "log.txt"
    with open(path, "w") as stream:
        writer = LineWriter(stream, interval=3600)
        writer.setFormatter(logging.Formatter("%(message)s"))
        record = lambda msg: logging.makeLogRecord({"msg": msg, "levelno": logging.INFO})  # noqa: E731
        writer.handle(record("parent, before the fork"))
        pid = os.fork()
        if pid == 0:  # the child: log one line, write it, leave without running the parent's exit hooks
            try:
                writer.handle(record("child"))
                writer.flush()
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        writer.handle(record("parent, after the fork"))
        writer.close()
    assert sorted(path.read_text().splitlines()) == ["child", "parent, after the fork", "parent, before the fork"]


def test_lines_queued_when_the_process_exits_are_written():
    """configure_logging's handler, a process that logs and exits at once (logging.shutdown at exit)."""
    code = ("import logging, types\n"
            "from receiver.logs import configure_logging\n"
            "configure_logging(types.SimpleNamespace(log_format='text', log_level='INFO'))\n"
            "for n in range(3):\n"
            "    logging.getLogger('exit-test').info('line %d before exit', n)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [line.split(": ", 1)[1] for line in out.stderr.splitlines()] == [f"line {n} before exit" for n in range(3)]


def test_configure_logging_replaces_and_closes_its_earlier_handler():
    import types

    from receiver.logs import configure_logging

    root = logging.getLogger()
    config = types.SimpleNamespace(log_format="text", log_level=root.level or logging.WARNING)
    configure_logging(config)
    first = next(h for h in root.handlers if h.get_name() == "receiver")
    configure_logging(config)
    ours = [h for h in root.handlers if h.get_name() == "receiver"]
    assert len(ours) == 1 and ours[0] is not first
    assert isinstance(ours[0], LineWriter) and isinstance(ours[0].formatter, TextFormatter)
    assert first._closed  # its thread ends, instead of one idle thread per app a test suite creates
