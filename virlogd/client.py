"""The library's connection to the daemon: batched, reconnecting, bounded, thread-safe.

``send()`` only encodes the record and appends the frame to a ``FrameQueue`` (whose C twin
makes ``send_frame`` one C call); the frames go out in one ``sendall`` per batch:

* in the caller's thread once the buffer passes ``FLUSH_BYTES`` (so a program that logs
  faster than the daemon reads is slowed down, never grows memory: backpressure);
* from a background thread ``delay`` seconds after the buffer stops being empty (so a quiet
  program's records still leave promptly); the thread is woken only on that transition;
* on ``flush()``, ``close()`` and at interpreter exit (``atexit``).

When the daemon is unreachable (not started, restarting) the frames stay in the buffer, at
most ``hold`` of them: beyond it the oldest are dropped and counted. A record that would push
one out first tries to reconnect; the background thread retries with exponential backoff.
Once connected again, the first frame sent is a warning record from ``virlogd.client``
saying how many records were dropped, then the held records in their order.

Frames written but not yet acknowledged by the daemon (protocol version 2) are kept too, up
to ``hold`` (``replay.Replay``): if the daemon dies with them unread in its socket buffer,
they go out again on the next connection, first. The answers are read without blocking after
each write, so they cost one extra system call per batch.

After ``fork()`` the child starts afresh (no socket, empty buffer, no thread): the parent's
connection and records remain the parent's, and the child's records carry its own pid.
"""
from __future__ import annotations

import atexit
import os
import socket
import threading
import time
import weakref
from typing import Iterable, List, Optional

from . import defaults, wire
from .framequeue import FrameQueue
from .record import Record
from .replay import Replay

FLUSH_BYTES = 64 * 1024
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
REPORT_SOURCE = "virlogd.client"

_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


class Client:
    """A connection to the virlogd daemon at *socket_path* (None: the default socket)."""

    def __init__(self, socket_path: Optional[str] = None, *, hold: int = 10000,
                 delay: float = 0.005) -> None:
        self.socket_path = socket_path or defaults.socket_path()
        self.hold = max(0, hold)
        self.delay = delay
        self.dropped = 0            # dropped and not yet reported to the daemon
        self.dropped_total = 0
        self.resent_total = 0       # records sent again: a daemon died before confirming
        self.last_error: Optional[str] = None
        self._closed = False
        self._reset()
        _clients.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()          # the counters, and what takes them with the queue
        self._send_lock = threading.Lock()     # the socket
        self._queue = FrameQueue(FLUSH_BYTES, self.hold, self._kick, self._flush_now)
        # the class's send_frame without its Python frame: the per-record call is one C call
        self.send_frame = self._queue.push
        self._sock: Optional[socket.socket] = None
        self._replay = Replay(self.hold)       # sent on this connection, not yet confirmed
        self._backoff = BACKOFF_FIRST
        self._next_try = 0.0
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- the public API --------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._sock is not None

    def send(self, record: Record) -> None:
        """Queue *record*; raises ValueError only for a record the daemon would refuse."""
        self.send_frame(wire.encode(record))

    def send_many(self, records: Iterable[Record]) -> None:
        for record in records:
            self.send_frame(wire.encode(record))

    def send_frame(self, frame: bytes) -> None:
        """Queue one already-encoded frame (``wire.encode``/``wire.encode_parts``); it is
        written by the background thread a moment later, or at once by this call when the
        queue passes ``FLUSH_BYTES`` (or ``hold`` frames while disconnected).

        (Each client replaces this method by its queue's ``push``, which does the same.)"""
        self._queue.push(frame)

    def flush(self) -> bool:
        """Send everything queued now; True if it all reached the daemon's socket."""
        return self._flush(force=True)

    def close(self) -> None:
        """Flush (one last reconnection attempt included), then close the connection."""
        self._flush(force=True)
        self._closed = True
        self._wake.set()
        with self._send_lock:
            self._disconnect()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the background flusher ------------------------------------------------------
    def _kick(self) -> None:
        """The queue became non-empty (its on_first). A closed client that is used again
        comes back to life."""
        with self._lock:
            if self._thread is None or self._closed:
                self._closed = False
                self._thread = threading.Thread(target=self._run, name="virlogd-client",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def _flush_now(self) -> None:
        """The queue is past its bounds (its on_full): write in the caller's thread."""
        self._flush(force=self._sock is None)

    def _run(self) -> None:
        wake = self._wake
        while not self._closed:
            wake.wait()
            if self._closed:
                return
            time.sleep(self.delay)             # let a burst gather into one write
            wake.clear()
            while not self._flush(force=False) and not self._closed:
                time.sleep(max(0.0, self._next_try - time.monotonic()) or self._backoff)

    # -- sending ---------------------------------------------------------------------
    def _flush(self, force: bool) -> bool:
        with self._send_lock:
            with self._lock:
                if not len(self._queue) and not self.dropped:
                    return True
            if self._sock is None and not self._connect(force):
                self._trim()
                return False
            if self._send_buffer():
                return True
            # the daemon went away (restart?): one immediate attempt at a new connection
            if self._connect(True) and self._send_buffer():
                return True
            self._trim()
            return False

    def _send_buffer(self) -> bool:
        with self._lock:
            frames = self._queue.take()
            dropped, self.dropped = self.dropped, 0
        if dropped:
            frames.insert(0, _Report(dropped))
        sock = self._sock
        try:
            sock.sendall(b"".join(frames))
        except OSError as err:
            self.last_error = err.strerror or str(err)
            self._lost_connection(sock, frames)
            return False
        self._replay.sent(frames)
        read_answers(sock, self._replay)
        return True

    def _lost_connection(self, sock: socket.socket, unsent: List[bytes]) -> None:
        """Put back, before what came since, every frame the daemon did not confirm: the
        failed write and what a killed daemon left unread in its socket buffer."""
        read_answers(sock, self._replay)   # a dead daemon's last answers are still there
        again, lost = self._replay.lost_connection(unsent)
        self._disconnect()
        frames: List[bytes] = []
        reported = 0
        for frame in again:
            if isinstance(frame, _Report):  # a fresh report will carry its count
                reported += frame.count
            else:
                frames.append(frame)
        with self._lock:
            self._queue.put_back(frames)
            self.dropped += reported + lost
            self.dropped_total += lost
            # written earlier, never confirmed: in the dead daemon's socket buffer
            self.resent_total += max(0, len(again) - len(unsent))

    def _trim(self) -> None:
        with self._lock:
            if self._sock is not None:
                return
            excess = self._queue.drop_oldest(len(self._queue) - self.hold)
            self.dropped += excess
            self.dropped_total += excess

    def _connect(self, force: bool) -> bool:
        if not force and time.monotonic() < self._next_try:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            # non-blocking connect: a daemon too busy to accept (full backlog) gives EAGAIN
            # at once instead of hanging the program that logs
            sock.setblocking(False)
            err = sock.connect_ex(self.socket_path)
            if err:
                raise OSError(err, os.strerror(err))
            sock.setblocking(True)
            sock.sendall(wire.HELLO)
        except OSError as err:
            sock.close()
            self.last_error = err.strerror or str(err)
            self._next_try = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            return False
        self._sock = sock
        self._queue.connected = True
        self._replay.reset()
        self._backoff = BACKOFF_FIRST
        self._next_try = 0.0
        return True

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        self._queue.connected = False
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _after_fork(self) -> None:
        sock = self._sock
        self._reset()
        self.dropped = 0
        if sock is not None:
            try:
                sock.close()          # our copy only: the parent's connection stays open
            except OSError:
                pass


def read_answers(sock: socket.socket, replay: Replay) -> None:
    """Give *replay* the daemon's acknowledgements waiting on *sock*; never blocks."""
    while True:
        try:
            data = sock.recv(65536, socket.MSG_DONTWAIT)
        except OSError:            # nothing yet (EAGAIN), or the daemon is gone
            return
        if not data:
            return
        replay.answer(data)


class _Report(bytes):
    """The frame of a warning record saying how many records were dropped."""

    def __new__(cls, count: int) -> "_Report":
        frame = super().__new__(cls, wire.encode_parts(
            3, REPORT_SOURCE, f"{count} record(s) dropped while the daemon was unreachable",
            time=time.time()))
        frame.count = count
        return frame


def _flush_all_at_exit() -> None:
    for client in list(_clients):
        if not client._closed:
            try:
                client.flush()
            except Exception:  # noqa: BLE001 - exit must go on
                pass


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork()


atexit.register(_flush_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["Client", "FLUSH_BYTES"]
