"""The local spool: durable appends, ordered drains, torn lines, segments held by a writer."""

import fcntl
import os
from pathlib import Path
from datetime import datetime, timezone

import pytest

from receiver.callbacks.service import RequestMeta
from receiver.callbacks.spool import Spool, SpooledRequest

META = RequestMeta("SdkAppid=1", 1, "Group.CallbackAfterGroupDestroyed", None, None, None, "application/json", "127.0.0.1")


def item(n: int) -> SpooledRequest:
    return SpooledRequest(datetime(2026, 1, 1, tzinfo=timezone.utc), META, f'{{"n": {n}}}'.encode())


def test_round_trip_keeps_bytes_and_metadata(tmp_path):
    original = SpooledRequest(datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=timezone.utc), META, b"\xff\x00raw")
    assert SpooledRequest.from_line(original.to_line()) == original


def test_drain_in_order_then_empty(tmp_path):
    spool = Spool(tmp_path)
    for n in range(5):
        spool.append(item(n))
    assert spool.depth() == 5
    seen = []
    assert spool.drain(lambda it: seen.append(it.raw_body)) == 5
    assert seen == [f'{{"n": {n}}}'.encode() for n in range(5)]
    assert spool.segments() == [] and spool.depth() == 0
    spool.append(item(9))  # a new segment after a drain
    assert spool.depth() == 1


def test_a_failed_drain_keeps_the_rest_and_resumes_after_the_last_handled(tmp_path):
    spool = Spool(tmp_path)
    for n in range(4):
        spool.append(item(n))
    seen = []

    def flaky(it):
        if len(seen) == 2:
            raise ConnectionError("database down")
        seen.append(it.raw_body)

    with pytest.raises(ConnectionError):
        spool.drain(flaky)
    assert len(spool.segments()) == 1
    spool.drain(lambda it: seen.append(it.raw_body))
    assert seen == [f'{{"n": {n}}}'.encode() for n in range(4)]  # none twice, none lost


def test_a_torn_last_line_is_skipped(tmp_path):
    spool = Spool(tmp_path)
    spool.append(item(1))
    spool.close_segment()
    [segment] = spool.segments()
    with open(segment, "ab") as f:
        f.write(b'{"received_at": "2026-01-01T00:00')  # the crash happened mid-write, never acknowledged
    seen = []
    assert Spool(tmp_path).drain(lambda it: seen.append(it)) == 1
    assert Spool(tmp_path).segments() == []


def test_a_segment_held_by_a_live_writer_is_left_alone(tmp_path):
    writer = Spool(tmp_path)
    writer.append(item(1))
    [segment] = writer.segments()
    other = Spool(tmp_path)
    # Simulate another process holding it: take the lock on a separate descriptor.
    fd = os.open(segment, os.O_RDONLY)
    writer.close_segment()
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert other.drain(lambda it: None) == 0
    finally:
        os.close(fd)
    assert other.drain(lambda it: None) == 1


def test_a_line_that_keeps_failing_is_set_aside_and_the_rest_drains(tmp_path):
    spool = Spool(tmp_path)
    for n in range(3):
        spool.append(item(n))
    seen = []

    def handle(it):
        if it.raw_body == b'{"n": 1}':
            raise ValueError("not a database outage: a bug or a limit")
        seen.append(it.raw_body)

    assert spool.drain(handle, retry_later=lambda exc: isinstance(exc, ConnectionError)) == 3
    assert seen == [b'{"n": 0}', b'{"n": 2}']  # the later callback is not held hostage
    [aside] = [p for p in tmp_path.iterdir() if p.name.endswith(".bad")]
    assert b'"n": 1' in SpooledRequest.from_line(aside.read_bytes()).raw_body
    assert spool.segments() == []


def test_a_new_segment_is_locked_before_it_is_visible(tmp_path):
    writer = Spool(tmp_path)
    writer.append(item(1))
    [segment] = writer.segments()
    # It bears a segment name only once its writer holds the lock: a drainer cannot take it.
    assert Spool(tmp_path).drain(lambda it: None) == 0
    assert segment.exists()


@pytest.mark.parametrize("truncate_works", [True, False])
def test_a_write_that_fails_part_way_leaves_nothing_glued_to_the_next_line(tmp_path, monkeypatch, truncate_works):
    spool = Spool(tmp_path)
    spool.append(item(1))
    real_write = os.write

    def half_then_disk_full(fd, data):
        monkeypatch.setattr(os, "write", real_write)
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_disk_full)
    if not truncate_works:
        monkeypatch.setattr(os, "ftruncate", lambda fd, size: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        spool.append(item(2))  # not acknowledged: the endpoint answers an error
    monkeypatch.undo()
    spool.append(item(3))
    spool.close_segment()
    seen = []
    assert spool.drain(lambda it: seen.append(it.raw_body)) == 2
    assert seen == [b'{"n": 1}', b'{"n": 3}']
    assert not list(tmp_path.glob("*.bad"))


@pytest.mark.parametrize("where", ["a file", "/proc"])
def test_check_refuses_a_directory_it_cannot_write(tmp_path, where):
    target = tmp_path / "spool"
    if where == "a file":
        target.write_text("not a directory")
    else:
        target = Path("/proc/receiver-spool-test")  # not even root creates files there
    with pytest.raises(OSError):
        Spool(target).check()
    Spool(tmp_path / "fine" / "nested").check()
    assert list((tmp_path / "fine" / "nested").iterdir()) == []


def test_segments_opened_within_one_millisecond_drain_in_the_order_they_were_opened(tmp_path):
    spool = Spool(tmp_path, clock=lambda: 1764583501.123)  # every segment in the same millisecond
    for n in range(6):
        spool.append(item(n))
        spool.close_segment()  # each request in a segment of its own
    assert len(spool.segments()) == 6
    seen = []
    assert spool.drain(lambda it: seen.append(it.raw_body)) == 6
    assert seen == [item(n).raw_body for n in range(6)]
