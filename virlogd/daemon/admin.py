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
                             {used, size, skipped}, ``followers`` {connected, missed,
                             queued_bytes}, ``temporary`` [timed changes, as below],
                             ``admin_changes`` (sets, reverts included),
                             ``admin_reverts``, ...
  ``follow``                 no args, or one filter string: the answer's RESULT is
                             ``"following"``, then the connection carries the records
                             as they arrive (``follow.py``), until either side closes
  =========================  =========================================================

- A set may carry ``"for": "10m"`` (``30s``, ``1h``, ``1h30m``): a time-boxed change, which
  reverts by itself (``timebox.py``). While one runs, a get's answer carries
  ``"temporary": {setting, value, reverts_to, for, by, remaining}`` (seconds) next to
  ``result``.

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
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..protocol import wire
from ..core.errors import ConfigError
from .follow import FollowHub, follow_filters
from .peercred import peer_credentials
from ..core.specs import parse_filters
from .timebox import TimeBoxes, format_duration

MAX_REQUEST = 64 * 1024

COMMANDS = ("daemon-log-filters", "daemon-log-outputs", "daemon-log-level", "dump", "stats",
            "follow")
SETTINGS = ("daemon-log-filters", "daemon-log-outputs", "daemon-log-level")


class _Follow:
    """dispatch's result for an accepted ``follow``: the connection becomes a follower."""

    def __init__(self, filters) -> None:
        self.filters = filters

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
    ``set_level(text, who)`` (raising ConfigError to refuse), ``dump()`` and ``stats()``;
    for ``follow``, ``router``; for ``--for``, ``log(priority, source, message)`` and
    optionally ``get_outputs_setting()`` (the outputs as set: ``""`` for the default).
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
        self.changes = 0            # settings changed by an administrator (or a revert)
        self.followers: Optional[FollowHub] = None      # made by the first follow
        self.timeboxes = TimeBoxes(loop, self._settings(for_revert=True), self._report)
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
            if not line.strip():
                continue
            answer = self.handle_line(bytes(line), conn.who)
            follow = answer.get("result") if answer["ok"] else None
            if isinstance(follow, _Follow):
                self._start_following(conn, follow)
                return
            if not self._send(conn.sock, answer):
                self._close(conn)
                return

    def _start_following(self, conn: _Connection, follow: _Follow) -> None:
        """Answer ``ok`` and hand *conn* over to the followers (follow.py)."""
        self.loop.remove_reader(conn.sock)
        self.connections.pop(conn.sock.fileno(), None)
        if not self._send(conn.sock, {"ok": True, "result": "following"}):
            conn.sock.close()
            return
        if self.followers is None:
            self.followers = FollowHub(self.loop, self.control.router)
        self.followers.add(conn.sock, follow.filters, conn.who)

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
        if self.followers is not None:
            self.followers.close()

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
        cmd, args, duration = request.get("cmd"), request.get("args", []), request.get("for")
        if not isinstance(cmd, str):
            return {"ok": False, "error": "malformed request: \"cmd\" must be a command "
                                          "name"}
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            return {"ok": False, "error": "malformed request: \"args\" must be a list of "
                                          "strings"}
        if duration is not None and not isinstance(duration, str):
            return {"ok": False, "error": "malformed request: \"for\" must be a duration "
                                          "such as \"10m\""}
        try:
            answer = {"ok": True, "result": self.dispatch(cmd, args, who, duration)}
            if cmd in SETTINGS and not args:
                temporary = self.timeboxes.describe(cmd)
                if temporary is not None:
                    answer["temporary"] = temporary
            return answer
        except ConfigError as err:
            return {"ok": False, "error": str(err)}
        except Exception as err:  # noqa: BLE001 - a bug in one command never stops the daemon
            return {"ok": False, "error": f"internal error in '{cmd}': "
                                          f"{type(err).__name__}: {err}"}

    def _settings(self, for_revert: bool = False) -> Dict[str, Tuple[Callable[[], Any],
                                                                      Callable[[str, str],
                                                                               None]]]:
        """(get, put) per setting; *for_revert*: a get whose value restores it exactly."""
        control = self.control
        outputs = getattr(control, "get_outputs_setting", None) if for_revert else None
        return {"daemon-log-filters": (lambda: control.get_filters(), self._put("filters")),
                "daemon-log-outputs": (outputs or (lambda: control.get_outputs()),
                                       self._put("outputs")),
                "daemon-log-level": (lambda: control.get_level(), self._put("level"))}

    def _put(self, what: str) -> Callable[[str, str], None]:
        def put(text: str, who: str) -> None:
            getattr(self.control, f"set_{what}")(text, who)
            self.changes += 1
        return put

    def _report(self, message: str) -> None:
        log = getattr(self.control, "log", None)
        if log is not None:
            log(4, "virlogd.admin", message)

    def dispatch(self, cmd: Any, args: List[str], who: str,
                 duration: Optional[str] = None) -> Any:
        """Run one command; raises ConfigError with the user's sentence on refusal."""
        settings = self._settings()
        if duration is not None and (cmd not in settings or len(args) != 1):
            raise ConfigError(f"'--for' needs a value to set, as in 'virlogd-admin {cmd} "
                              f"VALUE --for 10m'" if cmd in settings else
                              f"'{cmd}' does not take '--for'")
        if cmd in settings:
            if len(args) > 1:
                raise ConfigError(f"'{cmd}' takes at most one argument, got {len(args)}")
            get, put = settings[cmd]
            if not args:
                return get()
            if duration is not None:
                self.timeboxes.set(cmd, args[0], who, duration)
                return None
            running = self.timeboxes.running(cmd)
            if running is not None:
                who = f"{who}, ending the change for {format_duration(running.duration)} " \
                      f"by {running.who}"
            put(args[0], who)
            self.timeboxes.permanent(cmd)
            return None
        if cmd in ("dump", "stats"):
            if args:
                raise ConfigError(f"'{cmd}' takes no argument, got {len(args)}")
            return self.control.dump() if cmd == "dump" else self.control.stats()
        if cmd == "follow":
            if len(args) > 1:
                raise ConfigError(f"'follow' takes at most one argument, got {len(args)}")
            specs, error = parse_filters(args[0] if args else "")
            if error is not None:
                raise ConfigError(error.in_string())
            if getattr(self.control, "router", None) is None:
                raise ConfigError("'follow' is not available: no router to follow")
            return _Follow(follow_filters(specs))
        raise ConfigError(f"unknown command '{cmd}' (expected one of {', '.join(COMMANDS)})")

    def stats(self) -> Dict[str, Any]:
        """The admin side's part of the daemon's ``stats``."""
        hub = self.followers
        return {"admin": {"refused_peers": self.refused,
                          "refused_requests": self.refused_requests},
                "admin_changes": self.changes, "admin_reverts": self.timeboxes.reverted,
                "followers": hub.stats() if hub is not None else
                {"connected": 0, "missed": 0, "queued_bytes": 0},
                "temporary": self.timeboxes.listing()}
