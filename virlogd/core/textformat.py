"""Text formats: libvirt's line for stderr/file outputs and the ring, and the syslog payload.

``2026-11-23 14:29:04.771+0000: 4711: debug : virInitialize:278 : register drivers``

A record relayed from another process (``record.relayed``) names its source after the level,
since who sent it is what a reader of a relayed line asks:
``...: 4242: debug : qemu.monitor : qemuMonitorSend:1024 : sent``; ``-`` stands for an empty
source. The daemon's own records and the library's keep libvirt's line exactly.

Always UTC with a literal ``+0000``. A message may contain newlines or control characters;
written raw they could forge a record line (or a dump banner) in a file that tools and people
parse, so every continuation line starts with ``CONTINUATION`` — which no record line or banner
starts with — and other control characters are shown escaped (``\\x1b``). The one-line fields a
client gives (source, func) have every control character escaped, newlines included
(``\\x0a``): they can never end the line they are in.
"""
from __future__ import annotations

import re
import struct
import time as _time
from typing import Any, Iterable, Optional, Tuple

from . import speedups
from .priority import NAMES
from .record import Record

CONTINUATION = "  | "
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_last_second = (-1, "")      # (second, "YYYY-MM-DD HH:MM:SS"), replaced whole


def format_time(when: float) -> str:
    """``YYYY-MM-DD HH:MM:SS.mmm+0000`` in UTC; the date part is cached per second."""
    global _last_second
    seconds, ms = divmod(int(when * 1000), 1000)
    cached = _last_second
    if cached[0] != seconds:
        cached = (seconds, _time.strftime("%Y-%m-%d %H:%M:%S", _time.gmtime(seconds)))
        _last_second = cached
    return f"{cached[1]}.{ms:03d}+0000"


def _escape_control(match: "re.Match[str]") -> str:
    char = match.group()
    if char == "\n":
        return "\n" + CONTINUATION
    return f"\\x{ord(char):02x}"


def neutralise(text: str) -> str:
    """Make *text* safe to write as (the tail of) one record in a line-oriented file."""
    if text.isprintable() or _CONTROL.search(text) is None:   # the first test is the cheap one
        return text
    return _CONTROL.sub(_escape_control, text.replace("\r\n", "\n"))


def _escape_field(match: "re.Match[str]") -> str:
    return f"\\x{ord(match.group()):02x}"


def field(text: Any) -> str:
    """A client's one-line field (func, source) made safe inside a line: every control
    character escaped, ``\\n`` and ``\\r`` included."""
    if text.__class__ is not str:
        text = f"{text}"
    line: str = text
    if line.isprintable() or _CONTROL.search(line) is None:
        return line
    return _CONTROL.sub(_escape_field, line)


def _source_field(source: object) -> str:
    """The source as a relayed record's line shows it: ``-`` when empty."""
    return field(source) if source else "-"


def _body(pid: int, priority: int, func: Optional[str], line: int, message: str,
          source: Optional[str] = None) -> str:
    head = f"{pid}: {NAMES.get(priority, priority)} : "
    if source is not None:
        head = f"{head}{_source_field(source)} : "
    if func:
        return f"{head}{field(func)}:{line} : {neutralise(message)}"
    return f"{head}{neutralise(message)}"


_last_prefix: Tuple[object, str] = (None, "")     # ((millisecond, pid, priority, ...), "TIME: PID: LEVEL : ")


def _prefix(when: float, pid: int, priority: int) -> str:
    """The start of a line. A flood of records shares it (same millisecond, client and
    level), so the last one is kept: most lines then cost one tuple compare here. The cache
    is one tuple, replaced whole, so threads never see a key with another's text."""
    global _last_prefix
    # The classes are in the key because equal values can print differently (True == 1,
    # 4711.0 == 4711): without them a line would depend on the one before, and the compiled
    # twin, which has its own cache, could not give the same line.
    key = (int(when * 1000), pid, priority, pid.__class__, priority.__class__)
    cached = _last_prefix
    if cached[0] == key:
        return cached[1]
    text = f"{format_time(when)}: {pid}: {NAMES.get(priority, priority)} : "
    _last_prefix = (key, text)
    return text


def format_line(record: Any, with_stack: bool = False) -> str:
    """The full text line with its trailing newline; with the stack when asked (``+``)."""
    prefix = _prefix(record.time, record.pid, record.priority)
    if getattr(record, "relayed", False):
        prefix = f"{prefix}{_source_field(record.source)} : "
    func = record.func
    if func:
        text = f"{prefix}{field(func)}:{record.line} : {neutralise(record.message)}\n"
    else:
        text = f"{prefix}{neutralise(record.message)}\n"
    if with_stack and record.stack:
        text += "".join(f"{CONTINUATION}{neutralise(row)}\n"
                        for row in record.stack.rstrip("\n").split("\n"))
    return text


# A ring entry is either a text line (what a dump writes, when the record was formatted
# anyway for a text output) or, for a record nothing else formats, the record packed as it
# is: formatting costs more than the rest of the debug path, so it is deferred to dump time.
# Packed entries start with a byte below 0x20 (1), which no text line does. The line is a u32
# and the lengths u32s, so every value the wire admits packs (a client's line 2**31, or a
# 64 kB function name, once stopped the daemon here). A relayed record keeps its source.
_PACKED = struct.Struct("<BdiIBBII")   # 1, time, pid, line, priority, relayed, len(func),
PACKED_MARK = 1                        # len(source); then func, source, message
# what older versions packed (NUL, time, pid, line, priority, len(func)): a recovered ring
# of one of them still dumps
_PACKED_V0 = struct.Struct("<xdiiBH")


def _pack(when: float, pid: int, line: Optional[int], priority: int, func: Optional[str],
          message: str, source: Optional[str]) -> bytes:
    raw_func = (func or "").encode("utf-8", "surrogateescape")
    src = b"" if source is None else source.encode("utf-8", "surrogateescape")
    return (_PACKED.pack(PACKED_MARK, when, pid, line or 0, priority, source is not None,
                         len(raw_func), len(src))
            + raw_func + src + message.encode("utf-8", "surrogateescape"))


def pack_parts(when: float, pid: int, line: Optional[int], priority: int,
               func: Optional[str], message: str) -> bytes:
    """The ring entry of a record no output formats, from its parts: the library packs
    what only the ring wants without building a Record."""
    return _pack(when, pid, line, priority, func, message, None)


def pack_record(record: Any) -> bytes:
    """The ring entry of a record no output formats (cheaper than ``format_line``)."""
    return _pack(record.time, record.pid, record.line, record.priority, record.func,
                 record.message, record.source if getattr(record, "relayed", False) else None)


def entry_text(entry: bytes) -> str:
    """The text line of a ring entry, packed or not."""
    mark = entry[:1]
    if mark == b"\1":
        _, when, pid, line, priority, relayed, func_len, source_len = _PACKED.unpack_from(entry)
        start = _PACKED.size
        func = entry[start:start + func_len].decode("utf-8", "surrogateescape")
        start += func_len
        source = entry[start:start + source_len].decode("utf-8", "surrogateescape") \
            if relayed else None
        message = entry[start + source_len:].decode("utf-8", "surrogateescape")
        return f"{format_time(when)}: {_body(pid, priority, func or None, line, message, source)}\n"
    if mark != b"\0":
        return entry.decode("utf-8", "surrogateescape")
    when, pid, line, priority, func_len = _PACKED_V0.unpack_from(entry)
    start = _PACKED_V0.size
    func = entry[start:start + func_len].decode("utf-8", "surrogateescape")
    message = entry[start + func_len:].decode("utf-8", "surrogateescape")
    return f"{format_time(when)}: {_body(pid, priority, func or None, line, message)}\n"


def syslog_payload(record: Any) -> str:
    """The syslog message: the text line without its timestamp (syslog adds its own)."""
    return _body(record.pid, record.priority, record.func, record.line, record.message)


def dump_text(reason: str, lines: Optional[Iterable[str]], *, recovered: bool = False) -> str:
    """libvirt's dump: a line saying why, then the buffer between the banners."""
    what = "recovered log buffer of a previous run" if recovered else "internal log buffer"
    if lines is None:
        return f"{reason} {what} deactivated\n"
    body = "".join(lines)
    if body and not body.endswith("\n"):
        body += "\n"
    return (f"{reason} dumping {what}:\n\n"
            f"    ====== start of log =====\n\n"
            f"{body}\n"
            f"     ====== end of log =====\n")


# The compiled twins (core/speedups.py) return the same values and raise the same errors:
# they take the common case and hand the rest to the functions above, the reference.
format_line = speedups.pick(format_line)
pack_record = speedups.pick(pack_record)
pack_parts = speedups.pick(pack_parts)
entry_text = speedups.pick(entry_text)
