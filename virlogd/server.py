"""The client socket: connections in, frames decoded, records routed, in each client's order.

Everything runs in the daemon's one loop thread (``loop.EventLoop``). Each readable
connection gets one ``recv_into`` of up to 256 kB into a buffer shared by all connections,
and every complete frame in it is routed before the loop moves on; one read per wake-up keeps
clients fair, and a busy client cannot starve the others.

Answers (protocol version 2): after routing what one read of a connection completed, the
daemon writes back the number of records routed on it so far, so that a client can send
again what a killed daemon left unread (``replay.py``).

Backpressure: routing is synchronous, so while an output is slow the loop is not reading,
the kernel's socket buffers fill, and clients block in ``send`` — nothing is buffered here
beyond one partial frame per connection (at most ``wire.MAX_FRAME``).

Identity: pid/uid/gid are read once per connection with SO_PEERCRED, at accept, and stamped
on every record by the decoder; the protocol has no way to claim them.

A malformed or oversized frame closes that connection only; it is counted and reported as a
warning record (source ``virlogd.server``) naming the client's pid. Reports about misbehaving
clients are rate-limited, so a client that reconnects in a loop cannot flood the outputs.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from typing import Dict, Optional

from .errors import ProtocolError
from .record import Record
from .wire import FrameDecoder, encode_ack

READ_SIZE = 256 * 1024
ACCEPT_BATCH = 64              # connections accepted per wake-up of the listening socket
DRAIN_LIMIT = 64 * 1024 * 1024  # bytes drain() reads from one connection at most
REPORT_SOURCE = "virlogd.server"
_CRED = struct.Struct("3i")


class _Connection:
    __slots__ = ("sock", "fd", "pid", "uid", "gid", "decoder", "routed", "unsent")

    def __init__(self, sock: socket.socket, pid: int, uid: int, gid: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.decoder = FrameDecoder(pid=pid, uid=uid, gid=gid)
        self.routed = 0          # records routed: what a version 2 client is told
        self.unsent = b""        # the rest of an answer the socket took only in part

    def who(self) -> str:
        return f"pid {self.pid} (uid {self.uid})"


class _RateLimit:
    """At most *burst* reports per *interval* seconds; counts what it suppressed."""

    def __init__(self, burst: int = 10, interval: float = 10.0) -> None:
        self.burst = burst
        self.interval = interval
        self.window = -interval
        self.sent = 0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now - self.window >= self.interval:
            self.window = now
            self.sent = 0
        if self.sent < self.burst:
            self.sent += 1
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count


class ClientServer:
    """Serves the client socket *sock* (listening, AF_UNIX SOCK_STREAM) on *loop*."""

    def __init__(self, loop, router, sock: socket.socket, *, max_clients: int = 1024,
                 ident: str = "virlogd") -> None:
        self.loop = loop
        self.router = router
        self.sock = sock
        self.max_clients = max_clients
        self.ident = ident
        self.connections: Dict[int, _Connection] = {}
        self.accepting = False
        self.connections_total = 0
        self.records = 0
        self.malformed = 0
        self.truncated = 0
        self.refused = 0
        self._renamed_closed = 0     # renames counted on connections already closed
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        self._fault_reports = _RateLimit(burst=10)
        self._refusal_reports = _RateLimit(burst=1)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.sock.setblocking(False)
        self.loop.add_reader(self.sock, self._on_listen)
        self.accepting = True

    def stop_accepting(self) -> None:
        """Stop taking new connections. Clients already queued in the listen backlog have
        connected (and may have sent records), so they are accepted first, to be drained."""
        if not self.accepting:
            return
        self.accepting = False
        self.loop.remove_reader(self.sock)
        self._accept_all(limit=None)

    def drain(self) -> None:
        """Route everything already readable on every connection, then close them all."""
        if self.accepting:
            self.stop_accepting()
        for conn in list(self.connections.values()):
            total = 0
            while conn.fd in self.connections and total < DRAIN_LIMIT:
                got = self._read(conn)
                if got <= 0:
                    break
                total += got
            if conn.fd in self.connections:
                self._close(conn, eof=True)

    def stats(self) -> dict:
        return {
            "clients": len(self.connections),
            "connections_total": self.connections_total,
            "records": self.records,
            "malformed_frames": self.malformed,
            "truncated_frames": self.truncated,
            "refused": self.refused,
            "renamed_fields": self._renamed_closed + sum(
                conn.decoder.renamed for conn in self.connections.values()),
        }

    # -- accepting -------------------------------------------------------------------
    def _on_listen(self, _sock) -> None:
        self._accept_all(limit=ACCEPT_BATCH)

    def _accept_all(self, limit: Optional[int]) -> None:
        count = 0
        while limit is None or count < limit:
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:     # EMFILE, ENFILE...: leave it in the backlog
                self._report(f"cannot accept a connection: {err.strerror or err}",
                             self._refusal_reports)
                return
            count += 1
            self._admit(conn)

    def _admit(self, conn: socket.socket) -> None:
        try:
            pid, uid, gid = _CRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
        except OSError:
            conn.close()
            return
        if len(self.connections) >= self.max_clients:
            self.refused += 1
            self._report(f"refused connection from pid {pid} (uid {uid}): too many clients "
                         f"({len(self.connections)} connected, max_clients = "
                         f"{self.max_clients}); {self.refused} refused so far",
                         self._refusal_reports)
            conn.close()
            return
        conn.setblocking(False)
        client = _Connection(conn, pid, uid, gid)
        self.connections[client.fd] = client
        self.connections_total += 1
        self.loop.add_reader(conn, self._on_readable)

    # -- reading ---------------------------------------------------------------------
    def _on_readable(self, sock) -> None:
        conn = self.connections.get(sock.fileno())
        if conn is not None:
            self._read(conn)

    def _read(self, conn: _Connection) -> int:
        """One read: route what it completes. Returns the bytes read, 0 at EOF (closed),
        -1 if nothing was there."""
        try:
            size = conn.sock.recv_into(self._buf)
        except (BlockingIOError, InterruptedError):
            return -1
        except OSError:                 # ECONNRESET: the client died; it sent nothing more
            size = 0
        if size == 0:
            self._close(conn, eof=True)
            return 0
        try:
            records = conn.decoder.feed(self._view[:size])
        except ProtocolError as err:
            self._route_all(conn, err.records)
            self._malformed(conn, str(err))
            return size
        self._route_all(conn, records)
        return size

    def _route_all(self, conn: _Connection, records) -> None:
        if not records:
            return
        self.router.route_many(records)
        self.records += len(records)
        if conn.decoder.version >= 2:
            self._answer(conn, len(records))

    def _answer(self, conn: _Connection, count: int) -> None:
        """Tell a version 2 client how many of its records are routed (in the ring) so far.
        Never blocks: a client that does not read its answers only misses some, and each
        answer carries the whole count, so the next one makes up for them."""
        conn.routed += count
        data = conn.unsent + encode_ack(conn.routed)
        try:
            sent = conn.sock.send(data)
        except OSError:                 # its buffer is full (EAGAIN), or it is gone
            return
        conn.unsent = data[sent:]

    # -- closing ---------------------------------------------------------------------
    def _malformed(self, conn: _Connection, reason: str) -> None:
        self.malformed += 1
        self.router.count_drop("malformed frame", 1)
        # reported before the close, so whoever sees the close can already see the report
        self._report(f"closed connection from {conn.who()}: {reason}", self._fault_reports)
        self._close(conn, eof=False)

    def _close(self, conn: _Connection, *, eof: bool) -> None:
        self.connections.pop(conn.fd, None)
        self.loop.remove_reader(conn.sock)
        self._renamed_closed += conn.decoder.renamed
        if eof:
            pending = conn.decoder.pending
            if pending and conn.decoder.failed is None:
                self.truncated += 1
                self.router.count_drop("truncated frame", 1)
                self._report(f"connection from {conn.who()} ended inside a frame: "
                             f"{pending} byte(s) of an incomplete frame discarded",
                             self._fault_reports)
            # whoever waits for our EOF (virlog) learns that its records reached the outputs
            self.router.flush()
        try:
            conn.sock.close()
        except OSError:
            pass

    def _report(self, message: str, limit: _RateLimit) -> None:
        if not limit.allow():
            return
        suppressed = limit.take_suppressed()
        if suppressed:
            message += f" ({suppressed} similar report(s) suppressed)"
        self.router.route(Record(3, REPORT_SOURCE, message, pid=os.getpid(),
                                 uid=os.getuid(), gid=os.getgid(), ident=self.ident))
