"""The client socket: connections in, frames decoded, records routed, in each client's order.

Everything runs in the daemon's one loop thread (``loop.EventLoop``). Each readable
connection gets one ``recv_into`` of up to 256 kB into a buffer shared by all connections,
and every complete frame in it is routed before the loop moves on; one read per wake-up keeps
clients fair, and a busy client cannot starve the others.

Answers (protocol version 2): after routing what one read of a connection completed, the
daemon writes back the number of records routed on it so far, so that a client can send
again what a killed daemon left unread (``replay.py``).

Wishes (protocol version 3): a version 3 client is told the daemon's filters and default
level when it greets, and again whenever they change (``Router.on_apply``: every admin
change, timed or not, and every revert), so that it sends what the daemon wants. Written
without blocking, like the answers; a wish the client's full buffer cannot take now stays
due on that connection and is written again at its next read or by a timer every
``WISH_RETRY`` seconds — only the newest wish, never a backlog.

Backpressure: routing is synchronous, so while an output is slow the loop is not reading,
the kernel's socket buffers fill, and clients block in ``send`` — nothing is buffered here
beyond one partial frame per connection (at most ``wire.MAX_FRAME``).

The budget of incomplete frames (``max_pending_size``): one partial frame per connection is
still up to 4 MiB times ``max_clients``, which any local user could make the daemon hold. So
a frame bigger than ``PENDING_FLOOR`` is read beyond that only once its whole size is
reserved in the budget, and then to its end and no further (it is bound to complete, so a
reservation is always given back). A connection whose frame does not fit waits, unregistered
from the loop, so that the kernel's buffers and that writer wait, while every connection
sending ordinary records goes on; waiting connections are let in, oldest first, as the
budget frees. Held bytes never exceed the budget plus ``PENDING_FLOOR`` per connection.

Descriptors: the client cap is kept under what ``RLIMIT_NOFILE`` leaves (``limits.py``). If
accepting still fails for want of a descriptor (EMFILE, ENFILE), a spare descriptor is given
up to accept and refuse the waiting connections, and the listening socket is not watched for
``ACCEPT_PAUSE`` seconds, instead of spinning on a socket that stays readable.

Identity: pid/uid/gid are read once per connection with SO_PEERCRED, at accept, and stamped
on every record by the decoder; the protocol has no way to claim them.

A malformed or oversized frame closes that connection only; it is counted and reported as a
warning record (source ``virlogd.server``) naming the client's pid. Reports about misbehaving
clients are rate-limited, so a client that reconnects in a loop cannot flood the outputs.
"""
from __future__ import annotations

import collections
import errno
import os
import socket
import time
from typing import Deque, Dict, Optional

from . import limits
from .admin import answer_wrong_socket, is_admin_request
from .peercred import peer_credentials
from ..core.errors import ProtocolError
from ..core.record import Record
from ..core.specs import format_filters
from ..protocol.wire import FrameDecoder, encode_ack, encode_answer, encode_wish

READ_SIZE = 256 * 1024
ACCEPT_BATCH = 64              # connections accepted per wake-up of the listening socket
DRAIN_LIMIT = 64 * 1024 * 1024  # bytes drain() reads from one connection at most
REPORT_SOURCE = "virlogd.server"
DEFAULT_MAX_PENDING = 64 * 1024 * 1024   # bytes held in incomplete frames, all clients
PENDING_FLOOR = 16 * 1024      # what any connection may hold without a reservation
ACCEPT_PAUSE = 0.2             # seconds the listening socket rests when out of descriptors
WISH_RETRY = 0.2               # seconds between attempts at a wish a client cannot take yet


class _Connection:
    __slots__ = ("sock", "fd", "pid", "uid", "gid", "decoder", "routed", "unsent",
                 "held", "reserved", "waiting", "told")

    def __init__(self, sock: socket.socket, pid: int, uid: int, gid: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.decoder = FrameDecoder(pid=pid, uid=uid, gid=gid)
        self.routed = 0          # records routed: what a version 2 client is told
        self.unsent = b""        # the rest of an answer the socket took only in part
        self.held = 0            # bytes of an incomplete frame in the decoder
        self.reserved = 0        # the budget reserved for that frame (its whole size), or 0
        self.waiting = False     # not read until its frame fits in the budget
        self.told = None         # the wish message a version 3 client was last written

    @property
    def cost(self) -> int:
        """What this connection takes from the budget of incomplete frames."""
        return self.reserved if self.reserved > self.held else self.held

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
                 max_pending: int = DEFAULT_MAX_PENDING, ident: str = "virlogd") -> None:
        self.loop = loop
        self.router = router
        self.sock = sock
        self.max_clients = max_clients              # in force (lowered to fit descriptors)
        self.configured_max_clients = max_clients
        self.max_pending = max_pending
        self.ident = ident
        self.connections: Dict[int, _Connection] = {}
        self.accepting = False
        self.connections_total = 0
        self.records = 0
        self.malformed = 0
        self.truncated = 0
        self.refused = 0
        self.refused_no_fd = 0       # connections refused for want of a descriptor
        self.accept_pauses = 0       # times accepting rested for want of a descriptor
        self.held = 0                # bytes in incomplete frames, all connections
        self.committed = 0           # the budget taken: held, or reserved where larger
        self.waits = 0               # times a connection had to wait for the budget
        self.waiting: Deque[_Connection] = collections.deque()
        self._renamed_closed = 0     # renames counted on connections already closed
        self._buf = bytearray(READ_SIZE)
        self._view = memoryview(self._buf)
        self._fault_reports = _RateLimit(burst=10)
        self._refusal_reports = _RateLimit(burst=1)
        self._budget_reports = _RateLimit(burst=1)
        self._fd_reports = _RateLimit(burst=1)
        self._spare: Optional[int] = None
        state = getattr(router, "state", None)      # (a test's stand-in may have none)
        self._wish = _wish_of(state) if state is not None else b""
        self._behind: Dict[int, _Connection] = {}   # a wish (or its end) still to write
        self._retrying = False
        router.on_apply = self._settings_changed

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Serve the socket. Called once the daemon's own descriptors are open, so that
        what they leave of RLIMIT_NOFILE decides the client cap in force."""
        self._spare = _open_spare()
        own = limits.open_descriptors()
        if own is not None:
            limit = limits.soft_limit()
            lowered = limits.does_not_fit(self.configured_max_clients, limit, own)
            self.max_clients = limits.client_cap(self.configured_max_clients, limit, own)
            if lowered:
                self._report(lowered, _RateLimit(burst=1))
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
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    def drain(self) -> None:
        """Route everything already readable on every connection, then close them all."""
        if self.accepting:
            self.stop_accepting()
        for conn in list(self.connections.values()):
            total = 0
            while conn.fd in self.connections and total < DRAIN_LIMIT:
                got = self._read(conn, budget=False)    # the last reads: no waiting now
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
            "max_clients": self.max_clients,
            "refused_no_descriptor": self.refused_no_fd,
            "accept_pauses": self.accept_pauses,
            "pending_bytes": self.held,
            "max_pending_size": self.max_pending,
            "clients_waiting": len(self.waiting),
            "waits": self.waits,
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
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE):
                    self._out_of_descriptors(err)
                else:                   # e.g. ECONNABORTED: that client is gone already
                    self._report(f"cannot accept a connection: {err.strerror or err}",
                                 self._refusal_reports)
                return
            count += 1
            self._admit(conn)

    def _out_of_descriptors(self, err: OSError) -> None:
        """No descriptor for the next connection: refuse those waiting (with the spare
        descriptor), and rest the listening socket a moment (it stays readable, and the
        level-triggered loop would otherwise call us again at once, for ever)."""
        refused = self._refuse_waiting()
        self.refused_no_fd += refused
        self.accept_pauses += 1
        if self.accepting:
            self.loop.rest_reader(self.sock, ACCEPT_PAUSE)
        which = f"RLIMIT_NOFILE {limits.soft_limit()} reached" if err.errno == errno.EMFILE \
            else "the system's file table is full"
        self._report(f"cannot accept connections: {err.strerror or err} ({which}); "
                     f"{self.refused_no_fd} connection(s) refused so far for want of a "
                     f"descriptor", self._fd_reports)

    def _refuse_waiting(self) -> int:
        """Accept and close the connections waiting in the backlog, on the spare
        descriptor: each client learns at once (EOF) instead of waiting for ever."""
        if self._spare is None:
            return 0
        os.close(self._spare)
        self._spare = None
        count = 0
        try:
            while count < ACCEPT_BATCH:
                try:
                    conn, _addr = self.sock.accept()
                except OSError:
                    break
                conn.close()
                count += 1
        finally:
            self._spare = _open_spare()
        return count

    def _admit(self, conn: socket.socket) -> None:
        try:
            pid, uid, gid = peer_credentials(conn)
        except OSError:
            conn.close()
            return
        if len(self.connections) >= self.max_clients:
            self.refused += 1
            lowered = "" if self.max_clients == self.configured_max_clients else \
                f", lowered from {self.configured_max_clients} to fit RLIMIT_NOFILE"
            self._report(f"refused connection from pid {pid} (uid {uid}): too many clients "
                         f"({len(self.connections)} connected, max_clients = "
                         f"{self.max_clients}{lowered}); {self.refused} refused so far",
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

    def _read(self, conn: _Connection, budget: bool = True) -> int:
        """One read: route what it completes. Returns the bytes read, 0 at EOF (closed),
        -1 if nothing was there (or the connection must wait for the budget)."""
        if budget:
            if conn.reserved:           # to the end of the reserved frame, no further
                want = min(READ_SIZE, conn.reserved - conn.held)
            else:
                want = min(READ_SIZE, max(PENDING_FLOOR - conn.held,
                                          self.max_pending - self.committed))
            if want <= 0:
                self._wait(conn)
                return -1
        else:
            want = READ_SIZE
        try:
            size = conn.sock.recv_into(self._buf, want)
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
            if not conn.decoder.version and is_admin_request(self._buf[:1]):
                answer_wrong_socket(conn.sock)      # virlogd-admin -S here: its mistake, told
                self._close(conn, eof=False)
                return size
            self._malformed(conn, str(err))
            return size
        if conn.told is not self._wish and conn.decoder.version >= 3:
            self._tell(conn)            # a new client's first read, or a wish still due
        self._route_all(conn, records)
        if conn.held or conn.decoder.pending:
            self._account(conn, budget)
        return size

    # -- the budget of incomplete frames -----------------------------------------------
    def _account(self, conn: _Connection, budget: bool) -> None:
        """Bring the budget up to date after a read of *conn*; reserve for a frame that
        has grown past the floor, or make the connection wait."""
        before = conn.cost
        held = conn.decoder.pending
        need = conn.decoder.pending_need if held else 0
        self.held += held - conn.held
        conn.held = held
        if conn.reserved and need != conn.reserved:
            conn.reserved = 0           # that frame is complete
        wait = False
        if budget and not conn.reserved and need > PENDING_FLOOR:
            if self.committed - before + need <= self.max_pending:
                conn.reserved = need
            else:
                wait = True
        after = conn.cost
        self.committed += after - before
        if wait:
            self._wait(conn)
        elif after < before and self.waiting:
            self._let_in()

    def _wait(self, conn: _Connection) -> None:
        if conn.waiting:
            return
        conn.waiting = True
        self.waiting.append(conn)
        self.waits += 1
        self.loop.remove_reader(conn.sock)
        self._report(f"max_pending_size reached ({self.held} bytes held in incomplete "
                     f"frames, limit {self.max_pending}): not reading from {conn.who()} "
                     f"until its {conn.decoder.pending_need}-byte frame fits; "
                     f"{len(self.waiting)} client(s) waiting", self._budget_reports)

    def _let_in(self) -> None:
        """Reserve for waiting connections, oldest first, while their frames fit."""
        while self.waiting:
            conn = self.waiting[0]
            need = conn.decoder.pending_need
            if self.committed - conn.cost + need > self.max_pending:
                return
            self.waiting.popleft()
            conn.waiting = False
            before = conn.cost
            conn.reserved = need
            self.committed += conn.cost - before
            self.loop.add_reader(conn.sock, self._on_readable)

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
        if conn.decoder.version >= 3:
            self._write(conn, encode_answer(conn.routed))
            if conn.unsent:             # a wish cut short must reach its end, soon
                self._behind_on(conn)
            return
        data = conn.unsent + encode_ack(conn.routed)
        try:
            sent = conn.sock.send(data)
        except OSError:                 # its buffer is full (EAGAIN), or it is gone
            return
        conn.unsent = data[sent:]

    # -- wishes (version 3) ------------------------------------------------------------
    def _settings_changed(self, state) -> None:
        """The router's state was swapped (Router.on_apply): tell every version 3 client
        the new wish, if the filters or the level changed (an output change does not)."""
        wish = _wish_of(state)
        if wish == self._wish:
            return
        self._wish = wish
        for conn in list(self.connections.values()):
            if conn.decoder.version >= 3:
                self._tell(conn)

    def _tell(self, conn: _Connection) -> None:
        wish = self._wish
        if self._write(conn, wish):
            conn.told = wish
        if conn.told is not wish or conn.unsent:
            self._behind_on(conn)

    def _write(self, conn: _Connection, message: bytes) -> bool:
        """Write what is left of the last message, then *message* (b"": nothing more),
        without blocking; keep what the socket did not take. False if nothing was written
        (the client's buffer is full, or it is gone): *message* was not taken."""
        data = conn.unsent + message if conn.unsent else message
        if not data:
            return True
        try:
            sent = conn.sock.send(data)
        except OSError:                 # EAGAIN (a client that does not read), or gone
            return False
        conn.unsent = data[sent:]
        return True

    def _behind_on(self, conn: _Connection) -> None:
        self._behind[conn.fd] = conn
        if not self._retrying:
            self._retrying = True
            self.loop.call_later(WISH_RETRY, self._retry)

    def _retry(self) -> None:
        """Write the wishes (and the ends of messages) clients could not take before."""
        self._retrying = False
        behind, self._behind = self._behind, {}
        for fd, conn in behind.items():
            if self.connections.get(fd) is not conn:
                continue                # closed meanwhile
            if conn.told is not self._wish:
                self._tell(conn)
            elif self._write(conn, b"") and not conn.unsent:
                continue
            else:
                self._behind_on(conn)

    # -- closing ---------------------------------------------------------------------
    def _malformed(self, conn: _Connection, reason: str) -> None:
        self.malformed += 1
        self.router.count_drop("malformed frame", 1)
        # reported before the close, so whoever sees the close can already see the report
        self._report(f"closed connection from {conn.who()}: {reason}", self._fault_reports)
        self._close(conn, eof=False)

    def _close(self, conn: _Connection, *, eof: bool) -> None:
        self.connections.pop(conn.fd, None)
        self._behind.pop(conn.fd, None)
        self.loop.remove_reader(conn.sock)
        if conn.waiting:
            conn.waiting = False
            self.waiting.remove(conn)
        freed = conn.cost
        self.held -= conn.held
        conn.held = conn.reserved = 0
        if freed:
            self.committed -= freed
            self._let_in()
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


def _wish_of(state) -> bytes:
    """The wish message for a router state: its default level and its filters."""
    return encode_wish(state.filters.default, format_filters(state.filters.filters))


def _open_spare() -> Optional[int]:
    """A descriptor held in reserve, given up to refuse clients when none is left."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
