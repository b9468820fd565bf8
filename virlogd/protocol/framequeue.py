"""The frames a ``Client`` has queued and not yet written: one push per record.

``push`` runs once per record in the program that logs (``log.info``, ``VirlogdHandler``, a
batching client), so it does as little as it can: one lock, one list append or one
non-blocking send.

The queue only keeps frames and decides when its owner must act; the owner does every
write, reconnection and count of what was dropped:

* ``on_first()`` is called when a push makes the queue non-empty (start the timer that
  writes a quiet program's records a moment later);
* ``on_full()`` is called when, after a push, the queue holds more than ``flush_bytes``
  bytes, or more than ``hold`` frames while ``connected`` is false (write now, in the
  caller's thread: backpressure instead of unbounded memory).

Both run after the frame is queued, outside the queue's lock; an exception from them
propagates to the caller of ``push``, and the frame stays queued.

Direct sends. While its owner sets ``sock`` (a connected stream socket; None: none), a push
that finds the queue empty first tries a non-blocking send of the frame from the caller's
thread, so that the record is in the kernel (and survives ``os._exit``, a crash, a forked
worker that never runs its exit hooks) before the logging call returns:

* written whole: the frame is kept in ``take_sent()``'s list (the owner's replay: the daemon
  has not confirmed it yet), and ``on_sent()`` is called once that list holds ``sent_limit``
  frames;
* written in part, or not at all because the socket is full (EAGAIN): the frame is queued as
  usual (``head_sent`` says how many of its bytes are out already), for the owner's writer;
* any other error (the daemon is gone): the frame is queued, ``sock`` is cleared, and
  ``on_full()`` is called, so the caller's thread reconnects and sends again at once.

A frame is never sent directly while anything is queued (order), nor while ``sock`` is None:
the owner clears it before it writes from another thread, and sets it again after. The send
happens under the lock: two threads writing parts of their frames into one stream at once
would interleave them.

Frames leave the queue under the lock but are let go of after it is released: freeing one
can run arbitrary code (a ``bytes`` subclass's ``__del__``) that may use the queue again.
"""
from __future__ import annotations

import operator
import socket
import threading
from typing import Callable, Iterable, List, Optional, Tuple

# MSG_NOSIGNAL: a daemon that went away is an EPIPE to handle, never a SIGPIPE that kills a
# program which (embedding Python) did not ignore it
_SEND_FLAGS = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)


class FrameQueue:
    """Frames (``bytes``) in the order pushed; see the module docstring."""

    __slots__ = ("_lock", "_frames", "_size", "connected", "_flush_bytes", "_hold",
                 "_on_first", "_on_full", "_on_sent", "sent_limit", "sock", "_sent",
                 "_head_sent")

    def __init__(self, flush_bytes: int, hold: int, on_first: Callable[[], object],
                 on_full: Callable[[], object],
                 on_sent: Optional[Callable[[], object]] = None) -> None:
        self._lock = threading.Lock()
        self._frames: List[bytes] = []
        self._size = 0
        self.connected = False
        self._flush_bytes = flush_bytes
        self._hold = hold
        self._on_first = on_first
        self._on_full = on_full
        self._on_sent = on_sent
        self.sent_limit = 256
        # the socket pushes send to directly while the queue is empty (None: none)
        self.sock: Optional[socket.socket] = None
        self._sent: List[bytes] = []
        self._head_sent = 0

    @property
    def head_sent(self) -> int:
        """Bytes of the first queued frame already written by a direct send (0: none)."""
        return self._head_sent

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def size(self) -> int:
        """Bytes queued."""
        return self._size

    def push(self, frame: bytes) -> None:
        """Queue *frame* (or send it at once); then call the hooks that are due."""
        if type(frame) is not bytes:
            _check(frame)
        broken = False
        due: Optional[Callable[[], object]] = None
        with self._lock:
            frames = self._frames
            sock = self.sock
            if sock is not None and not frames:
                try:
                    written = sock.send(frame, _SEND_FLAGS)
                except (BlockingIOError, InterruptedError):
                    written = 0
                except OSError:
                    written, broken, self.sock = 0, True, None
                if written == len(frame):       # the usual push: in the kernel already
                    sent = self._sent
                    sent.append(frame)
                    due = self._on_sent
                    if len(sent) < self.sent_limit or due is None:
                        return
                    # else on_sent is due, once the lock is let go
                else:
                    self._head_sent = written
            if due is None:
                frames.append(frame)
                size = self._size = self._size + len(frame)
                count = len(frames)
        if due is not None:
            due()
            return
        if count == 1:
            self._on_first()
        if broken or size > self._flush_bytes or (count > self._hold and not self.connected):
            self._on_full()

    def take_all(self) -> Tuple[int, List[bytes], List[bytes]]:
        """``(head_sent, take(), take_sent())`` in one step (a direct send cannot come in
        between): what a writer needs before it writes the queued frames."""
        with self._lock:
            head, self._head_sent = self._head_sent, 0
            frames, self._frames = self._frames, []
            self._size = 0
            sent, self._sent = self._sent, []
        return head, frames, sent

    def take_sent(self) -> List[bytes]:
        """The frames sent directly since the last call, oldest first."""
        with self._lock:
            sent, self._sent = self._sent, []
        return sent

    def take(self) -> List[bytes]:
        """Every queued frame, oldest first; the queue is left empty."""
        with self._lock:
            frames, self._frames = self._frames, []
            self._size = 0
            self._head_sent = 0
        return frames

    def put_back(self, frames: Iterable[bytes]) -> None:
        """Queue *frames* before everything queued (frames taken but never written)."""
        ahead = list(frames)
        for frame in ahead:
            _check(frame)
        added = sum(map(len, ahead))
        with self._lock:
            ahead.extend(self._frames)
            self._frames = ahead
            self._size += added

    def drop_oldest(self, count: int) -> int:
        """Remove up to *count* of the oldest frames; return how many were removed."""
        count = operator.index(count)
        with self._lock:
            frames = self._frames
            count = max(0, min(count, len(frames)))
            dropped = frames[:count]
            del frames[:count]
            self._size -= sum(map(len, dropped))
            if count:
                self._head_sent = 0
        del dropped                 # freed outside the lock (see the module docstring)
        return count


def _check(frame: object) -> None:
    if not isinstance(frame, bytes):
        raise TypeError(f"frame must be bytes, not {type(frame).__name__}")
