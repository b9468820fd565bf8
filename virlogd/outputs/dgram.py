"""Bounded sends to a local datagram socket (journald's native socket, ``/dev/log``).

Shared by the journald and syslog outputs. Three things matter to a daemon that must never
stall on one destination:

* **A restarted receiver is found at once.** The socket is ``connect()``-ed to the path (a
  send then skips the path lookup: about 0.9 µs of the ~3 µs a datagram costs here), and a
  connected datagram socket stays tied to the receiver it found. When that receiver goes
  away (journald or rsyslog restarted: a new socket file at the same path), the next send
  fails with ``ECONNREFUSED``; the sender then connects again to whatever is at the path now
  and sends that record there, so nothing is lost to the restart and nothing is reported.
* **A full receiver costs at most ``wait`` seconds, then nothing.** A datagram to a receiver
  whose queue is full blocks (``net.unix.max_dgram_qlen`` is 10 on Debian). ``SO_SNDTIMEO``
  makes the kernel give up after ``wait`` (a real sleep on the peer, not a spin). After one
  such timeout the sender is *stalled*: for ``retry_after`` seconds it sends with
  ``MSG_DONTWAIT`` and a full queue drops the record at once; the first send that succeeds
  ends the stall. So a stopped (SIGSTOP) journald costs the daemon one ``wait`` per
  ``retry_after``, and every record it loses is counted.
* **Failures raise** :class:`DeliveryError`, an ``OSError`` whose text says what happened in
  words (the router prints ``str(err)`` in its failure report and counts it).
"""
from __future__ import annotations

import errno
import os
import socket
import struct
import time
from typing import Optional, Sequence

# the receiver is gone (no socket file) or not listening (a stale socket file)
GONE = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.ENOTDIR, errno.ECONNRESET})
# what a send on a connected socket says once its receiver has gone away
DISCONNECTED = frozenset({errno.ECONNREFUSED, errno.ENOTCONN, errno.ECONNRESET,
                          errno.EDESTADDRREQ, errno.EPIPE})


class DeliveryError(OSError):
    """A record that did not reach the socket; ``str()`` is a sentence for the report."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DatagramSender:
    """An unconnected ``AF_UNIX``/``SOCK_DGRAM`` socket sending to *path*."""

    def __init__(self, path: str, what: str, *, wait: float = 0.5,
                 retry_after: float = 1.0) -> None:
        self.path = path
        self.what = what               # "journald", "syslog": used in error messages
        self.wait = wait
        self.retry_after = retry_after
        self.dropped = 0               # records lost to a full receiver
        self._stalled_until = 0.0
        self._sock: Optional[socket.socket] = None

    def _connect(self) -> socket.socket:
        """A socket connected to whatever is at the path now; raises OSError."""
        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setblocking(True)     # SO_SNDTIMEO only applies to a blocking socket
            seconds = int(self.wait)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("@ll", seconds, int((self.wait - seconds) * 1e6)))
            sock.connect(self.path)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        return sock

    def send(self, buffers: Sequence[bytes], ancdata: Sequence = ()) -> None:
        """Send one datagram; raise :class:`DeliveryError` (EMSGSIZE/ENOBUFS are left as a
        plain ``OSError`` so the caller can fall back to passing a file descriptor)."""
        # the clock is read only while stalled: this runs once per record
        stalled = self._stalled_until and time.monotonic() < self._stalled_until
        flags = socket.MSG_DONTWAIT if stalled else 0
        try:
            sock = self._sock
            if sock is None:
                self._connect().sendmsg(buffers, ancdata, flags)
            else:
                try:
                    sock.sendmsg(buffers, ancdata, flags)
                except OSError as err:
                    if err.errno not in DISCONNECTED:
                        raise
                    # our receiver went away (restarted?): this record goes to the one
                    # at the path now, if there is one
                    self._connect().sendmsg(buffers, ancdata, flags)
        except BlockingIOError:
            self.dropped += 1
            if not stalled:
                self._stalled_until = time.monotonic() + self.retry_after
            raise DeliveryError(errno.EAGAIN, (
                f"{self.what} at {self.path} is not keeping up: record dropped "
                f"({self.dropped} dropped so far)")) from None
        except OSError as err:
            if err.errno in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            if err.errno in GONE:
                raise DeliveryError(err.errno, f"cannot reach {self.what} at {self.path}: "
                                               f"{os.strerror(err.errno)}") from None
            raise DeliveryError(err.errno or 0, f"cannot send to {self.what} at {self.path}: "
                                                f"{err.strerror or err}") from None
        self._stalled_until = 0.0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
