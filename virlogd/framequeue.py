"""The frames a ``Client`` has queued and not yet written: one append per record.

Why a type of its own: ``Client.send_frame`` runs once per record in the program that logs
(``log.info``, ``VirlogdHandler``, a batching client), and in Python its lock, append and
size bookkeeping cost more than encoding the record. The C twin (``_cqueue.FrameQueue``,
chosen by ``native``) does the same in one call that the GIL makes atomic; the ``Client``
binds ``send_frame`` straight to ``push``.

The queue only keeps frames and decides when its owner must act; the owner does every
write, reconnection and count of what was dropped:

* ``on_first()`` is called when a push makes the queue non-empty (start the timer that
  writes a quiet program's records a moment later);
* ``on_full()`` is called when, after a push, the queue holds more than ``flush_bytes``
  bytes, or more than ``hold`` frames while ``connected`` is false (write now, in the
  caller's thread: backpressure instead of unbounded memory).

Both run after the frame is queued, outside any lock of the queue; an exception from them
propagates to the caller of ``push``, and the frame stays queued.
"""
from __future__ import annotations

import operator
import threading
from typing import Callable, List

from . import native


class FrameQueue:
    """Frames (``bytes``) in the order pushed; see the module docstring."""

    __slots__ = ("_lock", "_frames", "_size", "connected", "_flush_bytes", "_hold",
                 "_on_first", "_on_full")

    def __init__(self, flush_bytes: int, hold: int, on_first: Callable[[], object],
                 on_full: Callable[[], object]) -> None:
        self._lock = threading.Lock()
        self._frames: List[bytes] = []
        self._size = 0
        self.connected = False
        self._flush_bytes = flush_bytes
        self._hold = hold
        self._on_first = on_first
        self._on_full = on_full

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def size(self) -> int:
        """Bytes queued."""
        return self._size

    def push(self, frame: bytes) -> None:
        """Queue *frame*; then call ``on_first`` and/or ``on_full`` as they are due."""
        _check(frame)
        with self._lock:
            frames = self._frames
            frames.append(frame)
            size = self._size = self._size + len(frame)
            count = len(frames)
        if count == 1:
            self._on_first()
        if size > self._flush_bytes or (count > self._hold and not self.connected):
            self._on_full()

    def take(self) -> List[bytes]:
        """Every queued frame, oldest first; the queue is left empty."""
        with self._lock:
            frames, self._frames = self._frames, []
            self._size = 0
        return frames

    def put_back(self, frames: List[bytes]) -> None:
        """Queue *frames* before everything queued (frames taken but never written)."""
        frames = list(frames)
        for frame in frames:
            _check(frame)
        added = sum(map(len, frames))
        with self._lock:
            frames.extend(self._frames)
            self._frames = frames
            self._size += added

    def drop_oldest(self, count: int) -> int:
        """Remove up to *count* of the oldest frames; return how many were removed."""
        count = operator.index(count)
        with self._lock:
            frames = self._frames
            count = max(0, min(count, len(frames)))
            self._size -= sum(map(len, frames[:count]))
            del frames[:count]
        return count


def _check(frame) -> None:
    if not isinstance(frame, bytes):
        raise TypeError(f"frame must be bytes, not {type(frame).__name__}")


# The tests reach the reference by this name whichever one runs.
_PureFrameQueue = FrameQueue
_NATIVE = native.load("queue")
if _NATIVE is not None:
    FrameQueue = _NATIVE.FrameQueue    # type: ignore[misc]  # noqa: F811 - the same, in C
