"""The admin socket: what ``virlogd-admin`` talks to.

Protocol (one connection may carry several exchanges; ``virlogd-admin`` sends one):

- A request is one JSON object on one line, UTF-8, ending in ``\\n``::

      {"cmd": "daemon-log-filters", "args": ["3:remote 4:event"]}

  ``args`` may be left out (= ``[]``). At most 64 kB (``MAX_REQUEST``) per line.
- The answer is one JSON object on one line: ``{"ok": true, "result": RESULT}`` or
  ``{"ok": false, "error": "MESSAGE"}``, where MESSAGE is the sentence to show the user.
- Commands and their RESULT:

  =========================  =========================================================
  ``daemon-log-filters``     no args: the filter string; one arg: set it (``""`` clears
                             the filters), RESULT ``null``
  ``daemon-log-outputs``     no args: the output string (the default output when none is
                             set); one arg: set it (``""`` restores the default), ``null``
  ``daemon-log-level``       no args: the default priority 1-4; one arg: set it, ``null``
  ``dump``                   the ring buffer to the outputs (as SIGUSR2); RESULT the
                             number of records dumped
  ``stats``                  an object: ``received`` (the clients' records), ``own``
                             (the daemon's), ``dropped`` {reason: n}, ``outputs``
                             [{output, written, failed, dropped, last_error}] (the
                             error only while failing), ``clients``, ``buffer``
                             {used, size, skipped}, ...
  =========================  =========================================================

- A set is all-or-nothing: a refused string answers ``ok: false`` with libvirt's wording
  (``Invalid priority '9' for filter '9:foo'``) and the running settings are unchanged.

Who may ask: the socket file is mode 0600, and on top of that every connection's peer
credentials (``SO_PEERCRED``) are checked, so only the daemon's own uid is served even if the
file's mode is loosened or the socket was passed in by systemd. Another uid gets one error
answer and the connection is closed.

The server runs inside the daemon's single-threaded ``EventLoop`` and must never stop it:
malformed JSON, an unknown command, an oversized line or a failing control method all become
an error answer, never an exception out of a callback. Answers are small (a few kB at most),
so they are written with a non-blocking send; a peer that lets even that back up is dropped
rather than allowed to stall the loop.
"""
from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import wire
from .errors import ConfigError
from .sockets import bind_unix

MAX_REQUEST = 64 * 1024
_PEERCRED = struct.Struct("3i")     # struct ucred: pid, uid, gid

COMMANDS = ("daemon-log-filters", "daemon-log-outputs", "daemon-log-level", "dump", "stats")

# What the *client* socket answers a connection that opens with ``{`` (a JSON request, never a
# client's greeting): ``virlogd-admin -S`` given the client socket by mistake. An admin answer
# it can show (``"socket": "client"`` tells it which socket it reached), not a malformed frame.
WRONG_SOCKET = {"ok": False, "error": "this is virlogd's client socket, not its admin socket",
                "socket": "client"}


def is_admin_request(first: bytes) -> bool:
    """Whether *first*, the first bytes read on a client connection, open an admin request."""
    return first[:1] == b"{"


def answer_wrong_socket(conn: socket.socket) -> None:
    """Send WRONG_SOCKET on *conn* (non-blocking: a peer that does not read gets nothing)."""
    AdminServer._send(conn, WRONG_SOCKET)


# And the other way round: a client's greeting (``virlog -S`` given the admin socket) gets
# this answer at once, which virlog recognises, instead of a silent wait for a newline that
# never comes (virlog then saw the end of file and took its records as delivered).
NOT_CLIENT_SOCKET = {"ok": False, "error": "this is virlogd's admin socket, not its client "
                     "socket", "socket": "admin"}


def _client_greeting(buf: bytes) -> bool:
    """Whether *buf*, the first bytes of an admin connection, start a client's greeting."""
    return bool(buf) and wire.MAGIC.startswith(bytes(buf[:len(wire.MAGIC)]))


def bind_admin_socket(path: str) -> socket.socket:
    """A listening admin socket at *path*, mode 0600 from the moment it exists.

    A stale socket file (nobody answers) is replaced; if a live process answers on *path*,
    raises OSError: ``another virlogd is already listening on PATH``.
    """
    return bind_unix(path, socket.SOCK_STREAM, mode=0o600)


def peer_credentials(conn: socket.socket) -> Tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected AF_UNIX socket."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


class _Connection:
    __slots__ = ("sock", "pid", "uid", "buf")

    def __init__(self, sock: socket.socket, pid: int, uid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.uid = uid
        self.buf = bytearray()

    @property
    def who(self) -> str:
        return f"uid {self.uid} pid {self.pid}"


class AdminServer:
    """Serves the admin protocol on *sock* (a listening AF_UNIX stream socket) from *loop*.

    *control* is the daemon (or a test's fake) with ``get_filters()``, ``get_outputs()``,
    ``get_level()``, ``set_filters(text, who)``, ``set_outputs(text, who)``,
    ``set_level(text, who)`` (raising ConfigError to refuse), ``dump()`` and ``stats()``.
    Starts accepting as soon as it is constructed.
    """

    def __init__(self, loop, control, sock: socket.socket, *,
                 owner_uid: Optional[int] = None) -> None:
        self.loop = loop
        self.control = control
        self.sock = sock
        self.owner_uid = os.geteuid() if owner_uid is None else owner_uid
        self.connections: Dict[int, _Connection] = {}
        self.refused = 0            # connections turned away by the uid check
        self.refused_requests = 0   # requests answered with an error
        sock.setblocking(False)
        loop.add_reader(sock, self._accept)

    # -- connections -----------------------------------------------------------------
    def _accept(self, _sock) -> None:
        while True:
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:         # e.g. EMFILE: the socket stays readable; rest, not spin
                self.loop.rest_reader(self.sock, 0.2)
                return
            conn.setblocking(False)
            try:
                pid, uid, _gid = peer_credentials(conn)
            except OSError:
                conn.close()
                continue
            if uid != self.owner_uid:
                self.refused += 1
                self._send(conn, {"ok": False, "error": f"permission denied: uid {uid} is "
                                  f"not the daemon's uid {self.owner_uid}"})
                conn.close()
                continue
            self.connections[conn.fileno()] = _Connection(conn, pid, uid)
            self.loop.add_reader(conn, self._readable)

    def _readable(self, sock: socket.socket) -> None:
        conn = self.connections.get(sock.fileno())
        if conn is None:
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.buf += data
        if _client_greeting(conn.buf):
            self.refused_requests += 1
            self._send(conn.sock, NOT_CLIENT_SOCKET)
            self._close(conn)
            return
        while conn.sock.fileno() >= 0:
            line, sep, rest = conn.buf.partition(b"\n")
            if not sep:
                if len(conn.buf) > MAX_REQUEST:
                    self._answer_and_close(conn, f"request too large (limit {MAX_REQUEST} "
                                                 f"bytes per line)")
                return
            if len(line) > MAX_REQUEST:
                self._answer_and_close(conn, f"request too large (limit {MAX_REQUEST} "
                                             f"bytes per line)")
                return
            conn.buf = bytearray(rest)
            if line.strip() and not self._send(conn.sock, self.handle_line(bytes(line),
                                                                           conn.who)):
                self._close(conn)
                return

    def _answer_and_close(self, conn: _Connection, message: str) -> None:
        self.refused_requests += 1
        self._send(conn.sock, {"ok": False, "error": message})
        self._close(conn)

    def _close(self, conn: _Connection) -> None:
        self.loop.remove_reader(conn.sock)
        self.connections.pop(conn.sock.fileno(), None)
        conn.sock.close()

    @staticmethod
    def _send(sock: socket.socket, answer: Dict[str, Any]) -> bool:
        data = (json.dumps(answer, separators=(",", ":")) + "\n").encode("utf-8")
        try:
            while data:
                sent = sock.send(data)
                data = data[sent:]
        except OSError:             # gone, or not reading at all: drop it, never block
            return False
        return True

    def close(self) -> None:
        """Stop accepting and drop open admin connections (the listening socket is the
        caller's to close)."""
        self.loop.remove_reader(self.sock)
        for conn in list(self.connections.values()):
            self._close(conn)

    # -- requests --------------------------------------------------------------------
    def handle_line(self, line: bytes, who: str) -> Dict[str, Any]:
        """The answer to one request line; never raises. Refusals are counted."""
        answer = self._answer(line, who)
        if not answer["ok"]:
            self.refused_requests += 1
        return answer

    def _answer(self, line: bytes, who: str) -> Dict[str, Any]:
        try:
            request = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            return {"ok": False, "error": f"malformed request (not a JSON object on one "
                                          f"line): {err}"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "malformed request: expected a JSON object with "
                                          "\"cmd\" and \"args\""}
        cmd, args = request.get("cmd"), request.get("args", [])
        if not isinstance(cmd, str):
            return {"ok": False, "error": "malformed request: \"cmd\" must be a command "
                                          "name"}
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            return {"ok": False, "error": "malformed request: \"args\" must be a list of "
                                          "strings"}
        try:
            return {"ok": True, "result": self.dispatch(cmd, args, who)}
        except ConfigError as err:
            return {"ok": False, "error": str(err)}
        except Exception as err:  # noqa: BLE001 - a bug in one command never stops the daemon
            return {"ok": False, "error": f"internal error in '{cmd}': "
                                          f"{type(err).__name__}: {err}"}

    def dispatch(self, cmd: Any, args: List[str], who: str) -> Any:
        """Run one command; raises ConfigError with the user's sentence on refusal."""
        settings: Dict[str, Tuple[Callable[[], Any], Callable[[str, str], None]]] = {
            "daemon-log-filters": (self.control.get_filters, self.control.set_filters),
            "daemon-log-outputs": (self.control.get_outputs, self.control.set_outputs),
            "daemon-log-level": (self.control.get_level, self.control.set_level),
        }
        if cmd in settings:
            if len(args) > 1:
                raise ConfigError(f"'{cmd}' takes at most one argument, got {len(args)}")
            get, put = settings[cmd]
            if not args:
                return get()
            put(args[0], who)
            return None
        if cmd in ("dump", "stats"):
            if args:
                raise ConfigError(f"'{cmd}' takes no argument, got {len(args)}")
            return self.control.dump() if cmd == "dump" else self.control.stats()
        raise ConfigError(f"unknown command '{cmd}' (expected one of {', '.join(COMMANDS)})")
