"""Bounded sends to a local datagram socket (journald's native socket, ``/dev/log``).

Shared by the journald and syslog outputs. Three things matter to a daemon that must never
stall on one destination:

* **The path is resolved on every send.** The socket is never ``connect()``-ed: a connected
  datagram socket stays tied to the inode it found, so after journald or rsyslog restarts
  (a new socket file at the same path) it would fail forever. ``sendmsg`` with the address
  each time finds the new receiver the moment it exists, with no reconnect logic at all.
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

    def _socket(self) -> socket.socket:
        sock = self._sock
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setblocking(True)     # SO_SNDTIMEO only applies to a blocking socket
            seconds = int(self.wait)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                            struct.pack("@ll", seconds, int((self.wait - seconds) * 1e6)))
            self._sock = sock
        return sock

    def send(self, buffers: Sequence[bytes], ancdata: Sequence = ()) -> None:
        """Send one datagram; raise :class:`DeliveryError` (EMSGSIZE/ENOBUFS are left as a
        plain ``OSError`` so the caller can fall back to passing a file descriptor)."""
        # the clock is read only while stalled: this runs once per record
        stalled = self._stalled_until and time.monotonic() < self._stalled_until
        try:
            (self._sock or self._socket()).sendmsg(
                buffers, ancdata, socket.MSG_DONTWAIT if stalled else 0, self.path)
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
