"""``x:syslog:IDENT``: RFC 3164 datagrams to ``/dev/log``, each output with its own ident.

Why not the ``syslog`` module: ``openlog()`` sets one ident for the whole process, so two
outputs ``3:syslog:libvirtd 1:syslog:qemu`` (or a library user's own ``openlog``) would
overwrite each other's ident. We write what glibc's ``syslog(3)`` writes, ourselves:

    <PRI>Mmm dd hh:mm:ss IDENT: PAYLOAD

PRI = facility (daemon, 3, unless the record carries its own: ``priority.facility_of``) * 8 +
severity (debug 7, info 6, warning 4, err 3: libvirt's map);
the timestamp is the record's time in local time, as ``syslog(3)`` stamps it; the tag is the
ident alone, like libvirt's ``openlog(ident, 0, ...)`` (no ``LOG_PID``: the payload already
starts with the pid). PAYLOAD is ``textformat.syslog_payload``: the text line without our
timestamp, so syslog's own is the only one.

The socket is connected to ``/dev/log`` and connected again when the receiver it found goes
away (``dgram``), so when the syslog daemon restarts and its socket disappears and comes
back, the next record after its return gets through; while it is gone ``handle`` raises and
the router counts and reports it. A payload beyond ``MAX_DATAGRAM`` bytes is cut there (syslog daemons truncate far
earlier: rsyslog at 8 kB by default), never refused.
"""
from __future__ import annotations

import time
from typing import Optional

from ..core.priority import SYSLOG_SEVERITY, facility_of
from ..core.textformat import syslog_payload
from .base import Output
from .dgram import DatagramSender

DEV_LOG = "/dev/log"
FACILITY_DAEMON = 3
MAX_DATAGRAM = 64 * 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


_last_second = (None, "")     # (second, its timestamp), replaced whole: thread-safe


def rfc3164_timestamp(when: float) -> str:
    """``Nov  3 14:29:04``: local time, day padded with a space, English month names
    whatever the locale (what syslog daemons parse). Cached per second: ``localtime`` costs
    a microsecond a record here, and local time (DST included) only changes on a second."""
    global _last_second
    second = when // 1
    cached = _last_second
    if cached[0] == second:
        return cached[1]
    tm = time.localtime(when)
    text = f"{_MONTHS[tm.tm_mon - 1]} {tm.tm_mday:2d} {tm.tm_hour:02d}:{tm.tm_min:02d}:" \
           f"{tm.tm_sec:02d}"
    _last_second = (second, text)
    return text


def format_datagram(record, ident: str) -> bytes:
    pri = facility_of(record) * 8 + SYSLOG_SEVERITY.get(record.priority, 6)
    text = f"<{pri}>{rfc3164_timestamp(record.time)} {ident}: {syslog_payload(record)}"
    data = text.encode("utf-8", "surrogateescape")
    if len(data) > MAX_DATAGRAM:
        data = _cut(data, MAX_DATAGRAM)
    return data


def _cut(data: bytes, size: int) -> bytes:
    """The first *size* bytes, less a UTF-8 sequence the cut would split."""
    end = size
    while end > size - 4 and end > 0 and data[end] & 0xC0 == 0x80:
        end -= 1             # data[end] continues a sequence: cut before that sequence
    return data[:end]


class SyslogOutput(Output):
    """Writes each record to the local syslog socket under this output's ident;
    ``path`` is only for tests with a fake receiver."""

    def __init__(self, spec, ctx, *, path: Optional[str] = None, wait: float = 0.5) -> None:
        super().__init__(spec, ctx)
        self.ident = spec.name
        self.path = path or DEV_LOG
        self._sender = DatagramSender(self.path, "syslog", wait=wait)

    @property
    def dropped(self) -> int:     # type: ignore[override]
        return self._sender.dropped

    def handle(self, record, line: str) -> None:
        self._sender.send([format_datagram(record, self.ident)])

    def close(self) -> None:
        self._sender.close()
