"""Random bytes for ids (ULIDs, request ids): the OS's, read 4 KiB at a time.

`os.urandom` is a getrandom(2) call that gives up the interpreter lock; on the callback path
(three per callback) each one let another thread take the lock, and this one queued for it
again. The bytes are the same OS randomness, handed out from a buffer. A forked child starts
with an empty buffer: it must never hand out bytes its parent (or a sibling) also holds.
"""

from __future__ import annotations

import os
import threading

_CHUNK = 4096
_lock = threading.Lock()
_buffer = bytearray()


def random_bytes(n: int) -> bytes:
    """`n` bytes from the OS's random source (straight from it when more than a buffer's worth)."""
    global _buffer
    if n > _CHUNK:
        return os.urandom(n)
    with _lock:
        if len(_buffer) < n:
            _buffer = bytearray(os.urandom(_CHUNK))
        cut = len(_buffer) - n
        out = bytes(_buffer[cut:])
        del _buffer[cut:]
    return out


def _forget_after_fork() -> None:
    global _buffer, _lock
    _buffer = bytearray()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
