"""Frames a client has written but the daemon has not yet confirmed: what it sends again.

Why: a written frame is only in the kernel's socket buffer. If the daemon is killed
(SIGKILL, OOM killer, a crash) before reading it, the kernel throws it away, and without an
answer from the daemon the client could not even tell how many were lost. With protocol
version 2 the daemon answers each read with the number of records it has routed on the
connection (``wire.encode_ack``); routed means in the ring buffer, which survives the crash.
So after losing a connection a client sends again exactly what was not confirmed: nothing is
lost, and only a record the dead daemon routed in the instant between routing and answering
can arrive twice.

Bounded: at most *limit* unconfirmed frames are kept (the oldest go first). Should the
daemon die while a released one is still unconfirmed, it is counted as lost, never silently
gone. Sans-IO: the caller does the reading and writing.
"""
from __future__ import annotations

import collections
from typing import Deque, Iterable, List, Tuple

from .wire import AckDecoder


class Replay:
    """The unconfirmed frames of one connection, in order; ``reset()`` for a new one."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.reset()

    def reset(self) -> None:
        self._frames: Deque[bytes] = collections.deque()
        self._first = 0          # the connection's index of _frames[0]
        self._confirmed = 0      # the daemon's latest count
        self._acks = AckDecoder()

    def __len__(self) -> int:
        return len(self._frames)

    def sent(self, frames: Iterable[bytes]) -> None:
        """*frames* were written, in this order, after everything sent before."""
        kept = self._frames
        kept.extend(frames)
        self._drop_confirmed()
        excess = len(kept) - self.limit
        if excess > 0:
            for _ in range(excess):
                kept.popleft()
            self._first += excess

    def answer(self, data: bytes) -> None:
        """Bytes the daemon sent: acknowledgements (version 2)."""
        count = self._acks.feed(data)
        if count is not None:
            self.confirm(count)

    def confirm(self, count: int) -> None:
        """The daemon's count of records routed on this connection (an answer, however
        the version carried it)."""
        if count > self._confirmed:
            self._confirmed = count
            self._drop_confirmed()

    def lost_connection(self, unsent: Iterable[bytes] = ()) -> Tuple[List[bytes], int]:
        """The connection is gone (read its last answers first). Returns the frames to send
        on the next one, in order (the unconfirmed ones, then *unsent*, a write that failed
        and that the daemon may have read in part), and how many frames released
        unconfirmed were never confirmed (lost: count them). Ready for a new connection."""
        frames = list(self._frames)
        frames.extend(unsent)
        skip = self._confirmed - self._first
        lost = max(0, -skip)
        again = frames[max(0, skip):]
        self.reset()
        return again, lost

    def _drop_confirmed(self) -> None:
        frames = self._frames
        done = min(len(frames), self._confirmed - self._first)
        if done <= 0:
            return
        if done == len(frames):
            frames.clear()       # the usual case (all confirmed): no loop over thousands
        else:
            for _ in range(done):
                frames.popleft()
        self._first += done
