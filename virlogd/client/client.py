"""The library's connection to the daemon: reconnecting, bounded, thread-safe, fork-safe.

``send()`` encodes the record and hands the frame to a ``FrameQueue``. While connected and
with nothing queued, that call writes the frame at once with a non-blocking send from the
caller's thread: the record is in the kernel before the logging call returns, so a process that ends with ``os._exit`` (a forked worker,
``multiprocessing``) or is killed right after it loses nothing. What the socket cannot take
at once is queued, and goes out in one ``sendall`` per batch:

* in the caller's thread once the buffer passes ``FLUSH_BYTES`` (so a program that logs
  faster than the daemon reads is slowed down, never grows memory: backpressure);
* from a background thread ``delay`` seconds after the buffer stops being empty; the
  thread is woken only on that transition;
* on ``flush()``, ``close()`` and at interpreter exit (``atexit``).

With no connection, the first record queued tries to connect at once, in the caller's thread
(a new process, a forked child: its first record goes out before the call returns); after a
failure the background thread retries with backoff.

When the daemon is unreachable (not started, restarting) the frames stay in the buffer, at
most ``hold`` of them: beyond it the oldest are dropped and counted. A record that would push
one out first tries to reconnect; the background thread retries with exponential backoff.
Once connected again, the first frame sent is a warning record from ``virlogd.client``
saying how many records were dropped, then the held records in their order.

Frames written but not yet acknowledged by the daemon (protocol version 2) are kept too, up
to ``hold`` (``replay.Replay``): if the daemon dies with them unread in its socket buffer,
they go out again on the next connection, first. The answers are read without blocking after
each write, so they cost one extra system call per batch. The next write is what finds such a
connection dead; when none comes, ``flush()`` (and so ``close()`` and the exit hook) looks.

The daemon's wishes (protocol version 3): the daemon tells a client its filters and level
when it connects and whenever they change (``wire.Wish``). ``wish`` is the newest, while
connected (None before, and once the connection is lost: the program's own settings apply
again); the callables in ``on_wish`` are called with each new one (or None), outside every
lock of the client, so that the library and ``VirlogdHandler`` can send what the daemon
wants. A program that logs nothing still hears them: a listener thread per connection waits
(in ``poll``, costing nothing) until the daemon writes, reads under the send lock (the
answers are in the same stream), and rests ``LISTEN_PAUSE`` between reads, so that a
program logging at a high rate is not woken by every answer.

After ``fork()`` the child starts afresh (``os.register_at_fork``: no socket, empty buffer,
no thread, new locks, so none a parent's thread held): the parent's connection and queued
records remain the parent's (sent once, by the parent), and the child's carry its own pid.

Nothing silent: ``undelivered`` counts the records that did not reach a daemon (dropped
beyond ``hold``, or still queued). A client that closes, or is still open at interpreter
exit, with records undelivered writes one line to stderr: how many, to which socket, why.

With no socket given, a client uses ``defaults.client_socket_candidates()``: the per-user
socket when it exists, else the system one (looked at again on every connection attempt).
"""
from __future__ import annotations

import atexit
import json
import os
import select
import socket
import sys
import threading
import time
import weakref
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from ..core import defaults, safepath
from ..protocol import wire
from ..protocol.framequeue import FrameQueue
from ..core.record import Record
from ..protocol.replay import Replay

FLUSH_BYTES = 64 * 1024
# The socket's send buffer (the kernel caps it at net.core.wmem_max, doubled): a small record
# takes about 600 bytes of it, so the default (208 kB) holds only ~170 records a stalled or
# busy daemon has not read yet; beyond that they wait in the queue, which an os._exit loses.
SEND_BUFFER = 1024 * 1024
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 2.0
REPORT_SOURCE = "virlogd.client"
LISTEN_PAUSE = 0.1      # seconds the listener rests after a read (answers come in floods)

_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


class Client:
    """A connection to the virlogd daemon at *socket_path* (None: the default socket).

    *direct* (the default) writes each record from the caller's thread when the socket can
    take it (see the module docstring). ``direct=False`` only batches: about half the cost
    per record for a program that logs at a high rate, but what the last few milliseconds
    logged is lost if the process then ends with ``os._exit`` or is killed."""

    def __init__(self, socket_path: Optional[str] = None, *, hold: int = 10000,
                 delay: float = 0.005, direct: bool = True) -> None:
        # None: the default sockets, chosen again on each attempt (one may appear later)
        self._candidates = None if socket_path else defaults.client_socket_candidates()
        self.socket_path, self._absent = (socket_path, []) if socket_path else \
            choose_socket(self._candidates)
        self.hold = max(0, hold)
        self.delay = delay
        self.direct = direct
        self.dropped = 0            # dropped and not yet reported to the daemon
        self.dropped_total = 0
        self.resent_total = 0       # records sent again: a daemon died before confirming
        self.last_error: Optional[str] = None
        self._told = 0              # undelivered records already reported on stderr
        self._closed = False
        # called with each new wish of the daemon (wire.Wish, or None: no daemon to follow)
        self.on_wish: List[Callable[[Optional[wire.Wish]], None]] = []
        # called with the reason (``last_error``) each time a connection the client had is
        # lost; it then reconnects by itself. Called with the send lock held: a callback
        # must not use this client.
        self.on_lost: List[Callable[[str], None]] = []
        # the error a socket answered that is not a daemon's client socket (virlogd's admin
        # socket): this client connects no more, and its records stay undelivered
        self.refused: Optional[str] = None
        self._reset()
        _clients.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()          # the counters, and what takes them with the queue
        self._send_lock = threading.Lock()     # the socket
        self._queue = FrameQueue(FLUSH_BYTES, self.hold, self._kick, self._flush_now,
                                 self._note_sent)
        self._sock: Optional[socket.socket] = None
        self._replay = Replay(self.hold)       # sent on this connection, not yet confirmed
        self._backoff = BACKOFF_FIRST
        self._next_try = 0.0
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._messages = wire.MessageDecoder()  # the daemon's answers and wishes
        self._wish: Optional[wire.Wish] = None
        self._delivered: Optional[wire.Wish] = None   # what on_wish was last given
        self._wish_lock = threading.Lock()     # one thread calls on_wish at a time

    # -- the public API --------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def wish(self) -> Optional[wire.Wish]:
        """What the daemon wants (its filters and level), while connected and told; None
        otherwise (the program's own settings apply)."""
        return self._wish

    @property
    def undelivered(self) -> int:
        """Records that have not reached a daemon: dropped (beyond ``hold`` while it was
        unreachable, or written to a daemon that died before reading them), plus those
        still queued. What a client reports on stderr when it closes or the program exits."""
        return self.dropped_total + len(self._queue)

    def open(self) -> bool:
        """Connect now if the daemon is there, so that a program hears the daemon's wishes
        before it sends anything (one that logs only what nobody wants yet). Never waits
        and is never an error: if the daemon is not there, the first record tries again,
        as if this had not been called. True if connected; else ``last_error`` says why."""
        if not self._send_lock.acquire(blocking=False):
            return self._sock is not None
        try:
            if self._sock is not None or self._closed:
                return self._sock is not None
            backoff = self._backoff
            if self._connect(True):
                return True
            # last_error says why (virlog's message names it); no backoff for the next try
            self._backoff, self._next_try = backoff, 0.0
            return False
        finally:
            self._send_lock.release()

    def send(self, record: Record) -> None:
        """Queue *record*; raises ValueError only for a record the daemon would refuse."""
        self.send_frame(wire.encode(record))

    def send_many(self, records: Iterable[Record]) -> None:
        for record in records:
            self.send_frame(wire.encode(record))

    def send_frame(self, frame: bytes) -> None:
        """Send one already-encoded frame (``wire.encode``/``wire.encode_parts``): written
        by this call (a non-blocking send) when connected with nothing queued; else queued,
        for the background thread a moment later, or for this call once the queue passes
        ``FLUSH_BYTES`` (or ``hold`` frames while disconnected). Not connected: the first
        frame queued tries to connect, in this call."""
        self._queue.push(frame)

    def flush(self) -> bool:
        """Send everything queued now; True if it all reached the daemon's socket."""
        return self._flush(force=True)

    def drain(self, timeout: float = 30.0) -> bool:
        """Send everything, then wait until the daemon confirms it has routed it all: shut
        down the sending side and read to the daemon's end of file, which it sends only
        once it has routed (and flushed) everything it read. A connection lost meanwhile is
        made again, and what was not confirmed sent again, for at most *timeout* seconds
        (0: one attempt). True if everything was confirmed (or nothing was to send). The
        connection is closed either way: a record sent afterwards opens a new one."""
        deadline = time.monotonic() + timeout
        while True:
            if self._flush(force=True):
                with self._send_lock:
                    sock = self._sock
                    if sock is None and not len(self._queue) and not self.dropped:
                        return True
                    if sock is not None and self._confirm(sock):
                        return True
            if self.refused is not None or time.monotonic() >= deadline:
                return False
            time.sleep(max(0.0, min(self._backoff, deadline - time.monotonic())))

    def close(self) -> None:
        """Flush (one last reconnection attempt included), then close the connection; say
        on stderr how many records were not delivered, if any."""
        self._flush(force=True)
        self._closed = True
        self._wake.set()
        with self._send_lock:
            self._disconnect()
        self._deliver()
        self.report_undelivered()

    def report_undelivered(self, stream=None) -> Optional[str]:
        """Write (to stderr) and return the line saying how many records were not delivered,
        where and why; None (and nothing written) when there is nothing new to say."""
        count = self.undelivered
        if count <= self._told:
            return None
        self._told = count
        line = undelivered_line(count, self.socket_path, self.last_error, self._absent)
        try:
            print(line, file=stream or sys.stderr, flush=True)
        except (OSError, ValueError, AttributeError):   # no stderr left: nothing to tell
            pass
        return line

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the background flusher ------------------------------------------------------
    def _kick(self) -> None:
        """The queue became non-empty (its on_first). Not connected: try now, in the
        caller's thread (a fresh process's first record then leaves before the call
        returns); else, or if that fails, the background thread writes it. A closed client
        that is used again comes back to life."""
        if (self.direct and self._sock is None and not self._closed
                and self._send_lock.acquire(blocking=False)):
            # (never waits for the lock: a signal handler that logs while this thread is
            # writing must not deadlock; whoever holds it is writing anyway)
            try:
                if self._flush_locked(force=False):
                    return
            finally:
                self._send_lock.release()
        with self._lock:
            if self._thread is None or self._closed:
                self._closed = False
                self._thread = threading.Thread(target=self._run, name="virlogd-client",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def _flush_now(self) -> None:
        """The queue is past its bounds, or a direct send found the connection broken (its
        on_full): write in the caller's thread."""
        self._flush(force=self._sock is None or self._queue.sock is None)

    def _note_sent(self) -> None:
        """``sent_limit`` frames were sent directly (the queue's on_sent): hand them to the
        replay and read the daemon's answers, unless a writer is busy (it does that)."""
        if self._send_lock.acquire(blocking=False):
            try:
                sock = self._sock
                self._replay.sent(self._queue.take_sent())
                if sock is not None:
                    self._read_messages(sock)
            finally:
                self._send_lock.release()
            if self._wish is not self._delivered:
                self._deliver()

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
            done = self._flush_locked(force)
        if self._wish is not self._delivered:
            self._deliver()
        return done

    def _flush_locked(self, force: bool) -> bool:
        with self._lock:
            idle = not len(self._queue) and not self.dropped
        sock = self._sock
        if idle:
            if sock is None:
                return True
            if not force:
                self._replay.sent(self._queue.take_sent())
                return True
            # Nothing queued. An explicit flush (and so close() and the exit hook) still
            # asks whether the daemon is there: one killed before it read the last records
            # written would otherwise lose them unnoticed, since no later write finds the
            # connection dead. Then they are sent again, like a failed write. (No direct
            # sends meanwhile: each is in the replay, or queued behind it.)
            self._queue.sock = None
            self._replay.sent(self._queue.take_sent())
            if not len(self._replay) or self._read_messages(sock):
                if self.direct:
                    self._queue.sock = sock
                return True
            self._lost_connection(sock, [])
            with self._lock:
                if not len(self._queue) and not self.dropped:
                    return True     # its last answers confirmed them all: it stopped cleanly
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
        sock = self._sock
        queue = self._queue
        queue.sock = None           # no direct sends while this thread writes
        with self._lock:
            # skip: a direct send wrote part of the first frame; its rest goes first
            skip, frames, direct = queue.take_all()
            dropped, self.dropped = self.dropped, 0
        self._replay.sent(direct)   # written before anything queued now
        if dropped:
            frames.insert(1 if skip else 0, _Report(dropped))
        try:
            data = b"".join(frames)
            sock.sendall(memoryview(data)[skip:] if skip else data)
        except OSError as err:
            self.last_error = self.refused or err.strerror or str(err)
            self._lost_connection(sock, frames)    # whole frames again, on a new connection
            return False
        self._replay.sent(frames)
        self._read_messages(sock)
        if self.direct:
            queue.sock = sock
        return True

    def _lost_connection(self, sock: socket.socket, unsent: List[bytes]) -> None:
        """Put back, before what came since, every frame the daemon did not confirm: the
        failed write and what a killed daemon left unread in its socket buffer."""
        self._read_messages(sock)   # a dead daemon's last answers are still there
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
        if self.refused is None:
            for callback in list(self.on_lost):
                try:
                    callback(self.last_error or "connection lost")
                except Exception:  # noqa: BLE001 - a follower never breaks logging
                    pass

    def _confirm(self, sock: socket.socket) -> bool:
        """(drain, send lock held, everything sent.) Shut down our side of *sock* and read
        the daemon's answers to its end of file: True once it came (all routed); False if
        the connection was lost first (what was not confirmed is queued again)."""
        queue = self._queue
        queue.sock = None           # no direct sends now
        with self._lock:
            if len(queue):          # a direct send raced the flush: send it first
                return False
            self._replay.sent(queue.take_sent())
        try:
            sock.shutdown(socket.SHUT_WR)
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                count = self._messages.feed(data)
                if count is not None:
                    self._replay.confirm(count)
        except (OSError, wire.ProtocolError) as err:
            if isinstance(err, wire.ProtocolError):
                self._check_refusal(data)
                self.last_error = self.refused or str(err)
            else:
                self.last_error = self.refused or err.strerror or str(err)
            self._lost_connection(sock, [])
            return False
        self._replay.reset()        # the end of file: the daemon routed all it read
        self._disconnect()
        return True

    def _check_refusal(self, data: bytes) -> None:
        """A socket that is not a daemon's client socket answers a greeting with a JSON
        line (virlogd's admin socket: ``{"ok": false, "error": ...}``): note it in
        ``refused`` (no daemon message starts with ``{"ok"``: that length would be some
        2 GB). It stays ``last_error`` too: a write that fails after it is only its echo."""
        if not data.startswith(b'{"ok"'):
            return
        try:
            answer = json.loads(data.split(b"\n", 1)[0])
            error = str(answer.get("error") or "not virlogd's client socket")
        except (ValueError, AttributeError):
            error = "not virlogd's client socket"
        self.refused = self.last_error = error

    def _trim(self) -> None:
        with self._lock:
            if self._sock is not None:
                return
            excess = self._queue.drop_oldest(len(self._queue) - self.hold)
            self.dropped += excess
            self.dropped_total += excess

    def _connect(self, force: bool) -> bool:
        if self.refused is not None or not force and time.monotonic() < self._next_try:
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            # non-blocking connect: a daemon too busy to accept (full backlog) gives EAGAIN
            # at once instead of hanging the program that logs
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            if self._candidates is not None:
                self.socket_path, self._absent = choose_socket(self._candidates)
            err = sock.connect_ex(self.socket_path)
            if err:
                raise OSError(err, os.strerror(err))
            sock.setblocking(True)
            sock.sendall(wire.HELLO_V3)
        except OSError as err:
            sock.close()
            self.last_error = self.refused or err.strerror or str(err)
            self._next_try = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            return False
        self._sock = sock
        self._queue.connected = True
        self._queue.take_sent()      # (none: direct sends need a connection)
        self._queue.sock = sock if self.direct else None
        self._replay.reset()
        self._messages = wire.MessageDecoder()
        self._backoff = BACKOFF_FIRST
        self._next_try = 0.0
        listener = threading.Thread(target=self._listen, args=(sock,), daemon=True,
                                    name="virlogd-client-listener")
        listener.start()
        return True

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        self._queue.connected = False
        self._queue.sock = None
        self._wish = None           # no daemon to follow: the program's own settings
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)     # wakes the listener out of its poll
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass

    # -- what the daemon says (answers, wishes) -------------------------------------------
    def _read_messages(self, sock: socket.socket) -> bool:
        """Take the daemon's answers and wishes waiting on *sock*, without blocking (the
        send lock is held). False once the daemon has closed its end (or broke the
        protocol): nothing more will come on this connection."""
        messages = self._messages
        while True:
            try:
                data = sock.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            if not data:
                return False
            try:
                count = messages.feed(data)
            except wire.ProtocolError:
                self._check_refusal(data)
                return False
            if count is not None:
                self._replay.confirm(count)
            if messages.wish is not None and self._sock is sock:
                self._wish = messages.wish

    def _listen(self, sock: socket.socket) -> None:
        """The listener thread of one connection: reads what the daemon writes while
        nobody sends (a program whose records the daemon does not want yet), and tells
        on_wish. Ends with the connection (``_disconnect`` shuts it down to wake us)."""
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while self._sock is sock:
            try:
                poller.poll()
            except (OSError, ValueError):
                break
            with self._send_lock:
                if self._sock is not sock:
                    break
                alive = self._read_messages(sock)
                if not alive:       # the daemon is gone: the next write finds out
                    self._wish = None
            self._deliver()
            if not alive:
                break
            time.sleep(LISTEN_PAUSE)
        self._deliver()

    def _deliver(self) -> None:
        """Call on_wish with the newest wish, once per change, outside the send lock (a
        callback may take logging's module lock, which a thread flushing us may hold).
        Whoever finds another thread delivering leaves it to that thread, which looks
        again before it returns."""
        while self._wish is not self._delivered:
            if not self._wish_lock.acquire(blocking=False):
                return
            try:
                wish = self._wish
                if wish is self._delivered:
                    continue
                self._delivered = wish
                for callback in list(self.on_wish):
                    try:
                        callback(wish)
                    except Exception:  # noqa: BLE001 - a follower never breaks logging
                        pass
            finally:
                self._wish_lock.release()

    def _after_fork(self) -> None:
        sock = self._sock
        self._reset()
        # the child's counts are its own
        self.dropped = self.dropped_total = self.resent_total = self._told = 0
        self.last_error = None
        if sock is not None:
            try:
                sock.close()          # our copy only: the parent's connection stays open
            except OSError:
                pass


def program_name() -> Optional[str]:
    """This program's name for the ``ident`` of its records (journald's SYSLOG_IDENTIFIER):
    the script's base name; none for ``python -c`` and ``python -`` (a script read from
    stdin), whose argv[0] names nothing, so the record's source stands in for it."""
    argv0 = sys.argv[0] if getattr(sys, "argv", None) else ""
    name = os.path.basename(argv0)
    return name if name and name not in ("-c", "-") else None


def choose_socket(candidates: Sequence[str]) -> Tuple[str, List[str]]:
    """The socket to use of *candidates* (``defaults.client_socket_candidates()``): the first
    that exists in a directory nobody else controls, else the last; and the ones passed over.
    A per-user directory such as ``/tmp/virlogd-UID`` can be made by anyone first: a socket
    there that another user could have planted would collect our records, so it counts as
    absent (``safepath.check_runtime_dir``, the rule the daemon itself applies)."""
    for index, path in enumerate(candidates):
        if os.path.exists(path) and _safe_directory(path):
            return path, list(candidates[:index])
    return candidates[-1], list(candidates[:-1])


def _safe_directory(path: str) -> bool:
    try:
        safepath.check_runtime_dir(os.path.dirname(os.path.abspath(path)))
    except (safepath.UnsafePath, OSError):
        return False
    return True


def tried_paths(path: str, absent: Sequence[str]) -> str:
    """What the messages add when default sockets before *path* did not exist."""
    if not absent:
        return ""
    return f"; no socket at {' or '.join(absent)} either"


def undelivered_line(count: int, path: str, why: Optional[str],
                     absent: Sequence[str] = ()) -> str:
    """The one line a client writes on stderr at exit when records were not delivered."""
    records = "1 record was" if count == 1 else f"{count} records were"
    return (f"virlogd: warning: {records} not delivered to virlogd at {path}: "
            f"{why or 'not sent'}{tried_paths(path, absent)}")


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
                client.report_undelivered()
            except Exception:  # noqa: BLE001 - exit must go on
                pass


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork()


atexit.register(_flush_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["Client", "FLUSH_BYTES", "choose_socket", "undelivered_line"]
