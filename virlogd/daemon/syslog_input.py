"""The syslog-compatible input: RFC 3164 and RFC 5424 datagrams on a unix socket.

Programs that only speak syslog (``logger``, glibc's ``syslog(3)``, Python's
``SysLogHandler``) send one datagram per message to a socket such as ``/dev/log``. Pointing
``syslog_socket_path`` there makes virlogd the host's syslog daemon. The forms accepted:

    <PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG     RFC 3164 (logger --rfc3164)
    <PRI>Mmm dd hh:mm:ss TAG[PID]: MSG          glibc's syslog(3), logger's local default
    <PRI>TAG: MSG                               Python's SysLogHandler with an ident
    <PRI>1 TS HOST APP PROCID MSGID SD MSG      RFC 5424 (logger --rfc5424), MSG maybe BOM-led

The severity maps to a libvirt level (emerg/alert/crit/err 4, warning 3, notice/info 2,
debug 1); the tag (APP-NAME) is the source and the ident. The pid, uid and gid are the
sender's, from the socket's credentials (``SO_PASSCRED``), never the ``[PID]`` a program
writes: that is only a claim. Fields kept: ``SYSLOG_INPUT_FACILITY`` (the facility number the
sender used; ``SYSLOG_FACILITY`` itself is set by the journald output), and for RFC 5424
``SYSLOG_MSGID`` and ``SYSLOG_STRUCTURED_DATA`` (the raw SD, unless ``-``).

``parse_syslog`` is pure and never raises: what it cannot read is kept whole as the message,
from source ``syslog``. Input without a PRI is ``user.notice``, as RFC 3164 says. Should a
datagram still fail to become a record, it is counted (``unroutable datagram`` under dropped
in ``stats``) and reported at a bounded rate, and the input reads on; the router isolates each
record's own steps. Records are marked relayed: their text lines name the tag (the source),
with any control character in it escaped.
"""
from __future__ import annotations

import errno
import os
import re
import socket
import stat
import struct
import time
from typing import Dict, Tuple

from ..core.priority import FROM_SYSLOG_SEVERITY
from ..core.record import Record
from .sockets import SocketInUse, bind_unix, listening

FALLBACK_SOURCE = "syslog"
DEFAULT_PRI = 13                 # user.notice (RFC 3164 4.3.3)
MAX_DATAGRAM = 64 * 1024         # larger datagrams are cut (the kernel reports MSG_TRUNC)
READ_BATCH = 512                 # datagrams per wake-up at most, so other sockets get a turn
UNROUTABLE = "unroutable datagram"  # the dropped reason of a datagram that could not be read
_UCRED = struct.Struct("3i")     # struct ucred: pid, uid, gid

_PRI = re.compile(r"<(\d{1,3})>")
_TIMESTAMP = re.compile(r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")
_TAG = re.compile(r"([^\s\[\]:]{1,64})(?:\[(\d*)\])?: ?")
_HOST_TAG = re.compile(r"\S+ ([^\s\[\]:]{1,64})(?:\[(\d*)\])?: ?")

Parsed = Tuple[int, str, str, Dict[str, str]]


def parse_syslog(datagram: bytes) -> Parsed:
    """``(priority 1-4, source, message, fields)`` for one syslog datagram; never raises."""
    try:
        return _parse(datagram.decode("utf-8", "surrogateescape").rstrip("\0\n"))
    except Exception:  # noqa: BLE001 - a bad datagram must never stop the input
        text = datagram.decode("utf-8", "surrogateescape")
        return FROM_SYSLOG_SEVERITY[DEFAULT_PRI & 7], FALLBACK_SOURCE, text, {}


def _parse(text: str) -> Parsed:
    pri, rest = DEFAULT_PRI, text
    found = _PRI.match(text)
    if found and int(found.group(1)) <= 191:
        pri, rest = int(found.group(1)), text[found.end():]
    priority = FROM_SYSLOG_SEVERITY[pri & 7]
    fields = {"SYSLOG_INPUT_FACILITY": str(pri >> 3)}
    if found and rest.startswith("1 "):
        parsed = _parse_5424(rest[2:])
        if parsed is not None:
            source, message, extra = parsed
            fields.update(extra)
            return priority, source, message, fields
        return priority, FALLBACK_SOURCE, rest, fields
    stamped = _TIMESTAMP.match(rest)
    if stamped:
        rest = rest[stamped.end():]
        tag = _TAG.match(rest) or _HOST_TAG.match(rest)
    else:
        tag = _TAG.match(rest)
    if tag is None:
        return priority, FALLBACK_SOURCE, rest, fields
    return priority, tag.group(1), rest[tag.end():], fields


def _parse_5424(rest: str):
    """``TS HOST APP PROCID MSGID SD [MSG]`` -> (source, message, fields), or None."""
    parts = rest.split(" ", 5)
    if len(parts) < 6:
        return None
    _stamp, _host, app, _procid, msgid, tail = parts
    sd_end = _structured_data_end(tail)
    if sd_end is None:
        return None
    sd, message = tail[:sd_end], tail[sd_end:]
    if message:
        if not message.startswith(" "):
            return None
        message = message[1:]
    if message.startswith("\ufeff"):
        message = message[1:]
    fields = {}
    if msgid != "-":
        fields["SYSLOG_MSGID"] = msgid
    if sd != "-":
        fields["SYSLOG_STRUCTURED_DATA"] = sd
    return (app if app != "-" else FALLBACK_SOURCE), message, fields


def _structured_data_end(text: str):
    """Where the STRUCTURED-DATA at the start of *text* ends (``-`` or ``[..]..``)."""
    if text.startswith("-"):
        return 1
    pos, size = 0, len(text)
    while pos < size and text[pos] == "[":
        pos += 1
        quoted = False
        while pos < size:
            char = text[pos]
            if quoted and char == "\\":
                pos += 2
                continue
            if char == '"':
                quoted = not quoted
            elif char == "]" and not quoted:
                break
            pos += 1
        if pos >= size:
            return None          # an element that never closes
        pos += 1
    return pos if pos else None


def bind_syslog_socket(path: str) -> socket.socket:
    """A datagram socket bound at *path*, mode 0666 like ``/dev/log``, credentials passing on.
    A stale socket (or a symlink to one, as ``/dev/log`` often is) is replaced; a live
    receiver is refused."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None and stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        if listening(path, socket.SOCK_DGRAM):
            raise SocketInUse(errno.EADDRINUSE, f"a syslog daemon is already receiving on "
                                                f"{path} (a link to {target})")
        os.unlink(path)
    elif info is not None and stat.S_ISSOCK(info.st_mode) and listening(path, socket.SOCK_DGRAM):
        raise SocketInUse(errno.EADDRINUSE, f"a syslog daemon is already receiving on {path}")
    sock = bind_unix(path, socket.SOCK_DGRAM, mode=0o666)
    # at once: the kernel attaches a sender's credentials only if the receiving socket asks
    # for them when the datagram is sent; one sent before SyslogInput exists needs them too
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return sock


class SyslogInput:
    """Reads datagrams from *sock* (bound, or passed by systemd) whenever the loop says it is
    readable, and routes one record per datagram."""

    def __init__(self, loop, router, sock: socket.socket) -> None:
        self.loop = loop
        self.router = router
        self.sock = sock
        self.received = 0
        self.truncated = 0
        self._buffer = bytearray(MAX_DATAGRAM)
        self._ancillary = socket.CMSG_SPACE(_UCRED.size)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        loop.add_reader(sock, self._readable)

    def _readable(self, _sock) -> None:
        self.read(READ_BATCH)

    def drain(self) -> None:
        """Route everything already queued on the socket (at shutdown)."""
        while self.read(READ_BATCH) == READ_BATCH:
            pass

    def read(self, limit: int) -> int:
        """Route up to *limit* queued datagrams; return how many were read."""
        view = memoryview(self._buffer)
        count = 0
        while count < limit:
            try:
                size, ancdata, flags, _addr = self.sock.recvmsg_into([view], self._ancillary)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break             # a closed socket at shutdown: nothing more to read
            count += 1
            if flags & socket.MSG_TRUNC:
                self.truncated += 1
            try:
                record = self._record(bytes(view[:size]), ancdata)
            except Exception as err:  # noqa: BLE001 - no datagram may stop the input
                self.router.unroutable(f"a syslog datagram of {size} bytes", err,
                                       UNROUTABLE)
                continue
            self.router.route(record)      # the router isolates the record's own steps
        self.received += count
        return count

    def _record(self, datagram: bytes, ancdata) -> Record:
        pid, uid, gid = 0, None, None
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS \
                    and len(data) >= _UCRED.size:
                pid, uid, gid = _UCRED.unpack_from(data)
        priority, source, message, fields = parse_syslog(datagram)
        return Record(priority, source, message, time=time.time(), fields=fields, pid=pid,
                      uid=uid, gid=gid,
                      ident=source if source != FALLBACK_SOURCE else None, relayed=True)

    def close(self) -> None:
        self.loop.remove_reader(self.sock)
