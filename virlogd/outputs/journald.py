"""``x:journald``: records as structured journal entries, over journald's native protocol.

Why not systemd-python's ``journal.send``? ``sd_journal_send``
hard-codes ``/run/systemd/journal/socket``, and when journald is gone it returns without
telling anyone, so the message is lost silently. A daemon must count and report that failure
and carry on the moment journald is back. systemd-python also needs a C build (libsystemd-dev)
for a protocol that is twenty lines of Python. So this module speaks the protocol itself —
exactly what ``sd_journal_sendv`` does inside, and what libvirt's ``virLogOutputToJournald``
does — and the tests compare the result with ``journal.send`` field for field:

* one datagram per record to the journal socket, from our own ``AF_UNIX`` socket
  (``dgram.DatagramSender``: connected, and connected again to the socket at the path when
  journald restarts, for the record that found it gone; a full journald costs a bounded
  wait, then drops that are counted);
* ``NAME=value\\n`` per field, or, when the value holds a newline (or NUL), the binary-safe
  form ``NAME\\n`` + 64-bit little-endian length + bytes + ``\\n``; ``str`` values are UTF-8
  with ``surrogateescape`` (undecodable bytes a client sent come back as the same bytes),
  ``bytes`` values go as they are;
* a record too big for one datagram (EMSGSIZE/ENOBUFS: about 200 kB with the default send
  buffer) goes into a sealed memfd passed with ``SCM_RIGHTS``, as ``sd_journal_sendv`` does
  (journald accepts an unsealed file only from root, so sealing is what makes it work for
  everyone); without memfd, an unlinked 0600 file in ``/dev/shm``, as libvirt does.

Fields, in libvirt's order: ``MESSAGE`` (the raw message, no prefix), ``PRIORITY`` (7/6/4/3),
``SYSLOG_FACILITY`` (3, daemon, unless the record carries its own: ``priority.facility_of``),
``LIBVIRT_SOURCE``, ``CODE_FILE``/``CODE_LINE``/``CODE_FUNC`` when known, then every
metadata field of the record exactly as given (``MESSAGE_ID`` keeps its dashes, so a
``journalctl MESSAGE_ID=...`` query with the id as libvirt writes it finds the entry). A
record relayed for a client (its pid is not ours) also carries the client's identity:
``SYSLOG_IDENTIFIER`` (its ident, or the source), ``SYSLOG_PID`` and ``OBJECT_PID``
(journald resolves ``OBJECT_PID`` into ``OBJECT_UID``, ``OBJECT_COMM``... only for a root
sender), and ``OBJECT_UID``/``OBJECT_GID`` from the peer credentials. A client's own field with one of the names we set is kept as ``X_NAME``: it can
neither forge ours nor be lost; a name journald would silently drop is renamed the same way
as on the wire (``fieldnames.sanitize``).
"""
from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import struct
from typing import Dict, List, Optional, Union

from ..core import fieldnames
from ..core.defaults import JOURNAL_SOCKET
from ..core.priority import SYSLOG_SEVERITY, facility_of
from .base import Output
from .dgram import DatagramSender, DeliveryError

FACILITY_DAEMON = "3"
_SEALS = (getattr(fcntl, "F_SEAL_SHRINK", 2) | getattr(fcntl, "F_SEAL_GROW", 4)
          | getattr(fcntl, "F_SEAL_WRITE", 8) | getattr(fcntl, "F_SEAL_SEAL", 1))
_F_ADD_SEALS = getattr(fcntl, "F_ADD_SEALS", 1033)

Value = Union[str, bytes, int]


def encode_field(name: str, value: Value) -> bytes:
    """One field in the native protocol; binary-safe form when the value needs it."""
    if isinstance(value, bytes):
        data = value
    else:
        data = str(value).encode("utf-8", "surrogateescape")
    key = name.encode("ascii")
    if b"\n" in data or b"\0" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


def journal_fields(record, own_pid: int) -> Dict[str, Value]:
    """The fields of one journal entry for *record*, in order (see the module docstring)."""
    fields: Dict[str, Value] = {
        "MESSAGE": record.message,
        "PRIORITY": str(SYSLOG_SEVERITY.get(record.priority, 6)),
        "SYSLOG_FACILITY": str(facility_of(record)),    # daemon (3) unless the client chose
        "LIBVIRT_SOURCE": record.source,
    }
    if record.file:
        fields["CODE_FILE"] = record.file
    if record.line:
        fields["CODE_LINE"] = str(record.line)
    if record.func:
        fields["CODE_FUNC"] = record.func
    if record.pid != own_pid:
        fields["SYSLOG_IDENTIFIER"] = record.ident or record.source
        fields["SYSLOG_PID"] = str(record.pid)
        fields["OBJECT_PID"] = str(record.pid)
        if record.uid is not None:
            fields["OBJECT_UID"] = str(record.uid)
        if record.gid is not None:
            fields["OBJECT_GID"] = str(record.gid)
    for name, value in record.fields.items():
        if name in fields or not fieldnames.is_valid(name):
            name = _renamed(name, fields)
        fields[name] = value
    return fields


_SEVERITY_TEXT = {level: str(severity) for level, severity in SYSLOG_SEVERITY.items()}


def record_payload(record, own_pid: int) -> bytes:
    """``entry_payload(journal_fields(record, own_pid))``, written straight from the record
    when it has no fields of its own and only plain text and ints (the usual record): one
    str and one encode, no dict. Anything else takes the reference path; the tests compare
    the two on random records."""
    message, source, file, line, func = (record.message, record.source, record.file,
                                         record.line, record.func)
    if (record.fields or type(message) is not str or type(source) is not str
            or (line is not None and type(line) is not int)
            or (file and type(file) is not str) or (func and type(func) is not str)):
        return _by_fields(record, own_pid)
    text = (f"MESSAGE={message}\nPRIORITY={_SEVERITY_TEXT.get(record.priority, '6')}\n"
            f"SYSLOG_FACILITY={FACILITY_DAEMON}\nLIBVIRT_SOURCE={source}\n")
    lines = 4
    if file:
        text += f"CODE_FILE={file}\n"
        lines += 1
    if line:
        text += f"CODE_LINE={line}\n"
        lines += 1
    if func:
        text += f"CODE_FUNC={func}\n"
        lines += 1
    pid = record.pid
    if pid != own_pid:
        ident, uid, gid = record.ident or source, record.uid, record.gid
        if (type(ident) is not str or type(pid) is not int
                or (uid is not None and type(uid) is not int)
                or (gid is not None and type(gid) is not int)):
            return _by_fields(record, own_pid)
        text += f"SYSLOG_IDENTIFIER={ident}\nSYSLOG_PID={pid}\nOBJECT_PID={pid}\n"
        lines += 3
        if uid is not None:
            text += f"OBJECT_UID={uid}\n"
            lines += 1
        if gid is not None:
            text += f"OBJECT_GID={gid}\n"
            lines += 1
    # a value with a newline or NUL needs the binary-safe form: one count finds any
    if text.count("\n") != lines or "\0" in text:
        return _by_fields(record, own_pid)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:          # the reference path raises the field's own error
        return _by_fields(record, own_pid)


def _by_fields(record, own_pid: int) -> bytes:
    """The reference path of record_payload: the fields dict, then its encoding."""
    return entry_payload(journal_fields(record, own_pid))


def _renamed(name: str, taken) -> str:
    new = fieldnames.sanitize(name)
    while new in taken or new == name:
        new = ("X_" + new)[:64]
    return new


def encode_entry(fields: Dict[str, Value]) -> List[bytes]:
    return [encode_field(name, value) for name, value in fields.items()]


def entry_payload(fields: Dict[str, Value]) -> bytes:
    """The datagram: ``b"".join(encode_entry(fields))``, with runs of plain-text fields (all
    of the usual entry) built as one str and encoded once: field by field it cost ~1.4 µs a
    field, most of virlogd's time in front of journald."""
    chunks: List[bytes] = []
    text: List[str] = []
    try:
        for name, value in fields.items():
            if type(value) is str and "\n" not in value and "\0" not in value:
                text.append(f"{name}={value}\n")
                continue
            if text:
                chunks.append("".join(text).encode("utf-8", "surrogateescape"))
                text = []
            chunks.append(encode_field(name, value))
        if text:
            chunks.append("".join(text).encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:          # a lone surrogate: the field's own error, as before
        return b"".join(encode_entry(fields))
    return b"".join(chunks)


class JournaldOutput(Output):
    """Writes each record to journald; ``path`` is only for tests with a fake journal."""

    def __init__(self, spec, ctx, *, path: Optional[str] = None, wait: float = 0.5) -> None:
        super().__init__(spec, ctx)
        self.path = path or JOURNAL_SOCKET
        self._sender = DatagramSender(self.path, "journald", wait=wait)

    @property
    def dropped(self) -> int:     # type: ignore[override]
        return self._sender.dropped

    def handle(self, record, line: str) -> None:
        payload = record_payload(record, self.ctx.pid)
        try:
            self._sender.send((payload,))
        except OSError as err:         # EMSGSIZE/ENOBUFS: too big for one datagram
            if isinstance(err, DeliveryError) or err.errno not in (errno.EMSGSIZE,
                                                                   errno.ENOBUFS):
                raise
            self._send_as_file(payload)

    def _send_as_file(self, payload: bytes) -> None:
        fd = _sealed_copy(payload)
        try:
            self._sender.send([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                    array.array("i", [fd]))])
        finally:
            os.close(fd)

    def close(self) -> None:
        self._sender.close()


def _sealed_copy(payload: bytes) -> int:
    """A read-only descriptor holding *payload*: a sealed memfd, else an unlinked tmpfs file."""
    try:
        fd = os.memfd_create("journal-data", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except (AttributeError, OSError):
        return _unlinked_copy(payload)
    try:
        _write_all(fd, payload)
        fcntl.fcntl(fd, _F_ADD_SEALS, _SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlinked_copy(payload: bytes) -> int:
    import tempfile
    fd, name = tempfile.mkstemp(prefix="journal.", dir="/dev/shm")
    os.unlink(name)
    try:
        _write_all(fd, payload)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
