"""The client protocol: sans-IO encoding and decoding of records (see docs/protocol.md).

A connection is a byte stream: an 8-byte greeting (``VIRLOGD`` and a version byte), then
frames, each a little-endian ``u32`` length and that many bytes. Lengths, not separators,
delimit everything, so a message may hold any bytes (newlines, NULs, invalid UTF-8).

Why this shape: the anchors show the client is the limit and that batching many records per
write is what makes a stream fast, so a frame is one ``struct.pack`` plus a ``join`` on the
client, and the daemon cuts a 256 kB read into records with one ``unpack_from`` per frame.

``encode_parts``, ``encode`` and ``frames`` (the decoder's loop) are compiled when
``virlogd._speedups`` was built (``core/speedups.py`` picks): the compiled function does the
common case and hands everything else to the Python code here, which stays complete: it is
the fallback, the reference, and the only place an error message is written.

The protocol never carries pid, uid or gid: the daemon takes them from SO_PEERCRED, so no
client can claim to be another process. ``FrameDecoder`` stamps the trusted identity it is
given on every record it builds.
"""
from __future__ import annotations

import struct
from typing import Any, Dict, List, Mapping, Optional, Union

from ..core import fieldnames, speedups
from ..core.errors import ProtocolError
from ..core.filters import FilterSet
from ..core.record import Record
from ..core.specs import parse_filters

VERSION = 2                          # what virlog speaks; the daemon also takes 1 and 3
VERSIONS = (1, 2, 3)
MAGIC = b"VIRLOGD"
HELLO = MAGIC + bytes([VERSION])
HELLO_V1 = MAGIC + bytes([1])
HELLO_V3 = MAGIC + bytes([3])        # the library's Client: answers and wishes, tagged
MAX_FRAME = 4 * 1024 * 1024          # bytes after the length prefix; a 1 MiB message fits
MAX_FIELDS = 256
TYPE_RECORD = 1
KIND_TEXT, KIND_BYTES = 0, 1
MAX_TIME = 253402300799.0            # 9999-12-31T23:59:59Z: the text format's last second
# The longest source, func, ident and file the daemon keeps, in bytes: longer ones are cut
# there (at a character boundary) when decoded, and the record is kept. Decisions and header
# tokens are cached per distinct value (filters, the remote output), so a value's size
# multiplies into the daemon's memory; no real name comes near these.
MAX_SOURCE = 1024
MAX_FUNC = 1024
MAX_IDENT = 1024
MAX_FILE = 4096

# length, type, priority, nfields, line, time, then the lengths of source, message, func,
# file, stack, ident
_HEAD = struct.Struct("<IBBHId6I")
_HEAD_SIZE = _HEAD.size              # 44
_BODY_FIXED = _HEAD_SIZE - 4         # 40: what the length counts before the strings
_FIELD = struct.Struct("<BBI")       # name length, value kind, value length
_FIELD_SIZE = _FIELD.size
_LEN = struct.Struct("<I")
ACK = struct.Struct("<Q")            # version 2: the daemon's count of records routed
# version 3: every message the daemon writes back is a u32 length, then that many bytes
# starting with a u8 type: an answer (a u64 count) or a wish (a u8 level and the filters)
MSG_ANSWER, MSG_WISH = 1, 2
_MSG_HEAD = struct.Struct("<IB")
_MSG_ANSWER = struct.Struct("<IBQ")
MAX_MESSAGE = 1024 * 1024            # a wish's filters are far shorter; a bigger one is broken

FieldValue = Union[str, bytes]


# -- encoding (client side) ----------------------------------------------------------------
def _text(value: str) -> bytes:
    """UTF-8, keeping bytes smuggled in by surrogateescape; never raises."""
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:      # a lone surrogate of another kind
        return value.encode("utf-8", "backslashreplace")


def _name(value: str) -> bytes:
    # identifiers must be valid UTF-8 on the wire: replace what cannot be encoded
    return value.encode("utf-8", "replace")


def _encode_fields(fields: Mapping[str, FieldValue]) -> bytes:
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"too many fields ({len(fields)}, limit {MAX_FIELDS})")
    parts = []
    for name, value in fields.items():
        raw_name = _name(name)
        if len(raw_name) > 255:
            raw_name = fieldnames.sanitize(name).encode("ascii")
        if isinstance(value, bytes):
            kind, raw = KIND_BYTES, value
        else:
            kind, raw = KIND_TEXT, _text(value if isinstance(value, str) else str(value))
        parts.append(_FIELD.pack(len(raw_name), kind, len(raw)))
        parts.append(raw_name)
        parts.append(raw)
    return b"".join(parts)


def encode_parts(priority: int, source: str, message: str, *, time: float,
                 func: Optional[str] = None, line: int = 0, file: Optional[str] = None,
                 fields: Optional[Mapping[str, FieldValue]] = None,
                 stack: Optional[str] = None, ident: Optional[str] = None) -> bytes:
    """One frame for a record given field by field (what the logging handler uses).

    Raises ValueError for what the daemon would refuse (a priority outside 1-4, more than
    MAX_FIELDS fields, a frame over MAX_FRAME), so a bad record never costs a connection.
    """
    if priority not in (1, 2, 3, 4):
        raise ValueError(f"invalid priority {priority!r} (expected 1-4)")
    if not 0.0 <= time <= MAX_TIME:     # also refuses NaN: the daemon would drop the connection
        raise ValueError(f"invalid time {time!r} (expected 0 to {MAX_TIME:.0f})")
    src = _name(source)
    try:
        msg = message.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        msg = _text(message)
    fn = _name(func) if func else b""
    fl = _text(file) if file else b""
    st = _text(stack) if stack else b""
    idn = _name(ident) if ident else b""
    if fields:
        tail = _encode_fields(fields)
        count = len(fields)
    else:
        tail = b""
        count = 0
    size = _BODY_FIXED + len(src) + len(msg) + len(fn) + len(fl) + len(st) + len(idn) + len(tail)
    if size > MAX_FRAME:
        raise ValueError(f"record of {size} bytes exceeds the {MAX_FRAME}-byte frame limit")
    if not 0 <= line <= 0xFFFFFFFF:
        line = 0
    return b"".join((_HEAD.pack(size, TYPE_RECORD, priority, count, line, time, len(src),
                                len(msg), len(fn), len(fl), len(st), len(idn)),
                     src, msg, fn, fl, st, idn, tail))


encode_parts = speedups.pick(encode_parts)


def encode(record: Record, ident: Optional[str] = None) -> bytes:
    """One frame for *record*, with *ident* as the program name when the record has none.
    Its pid/uid/gid are not sent: the daemon reads the peer's."""
    return encode_parts(record.priority, record.source, record.message, time=record.time,
                        func=record.func, line=record.line or 0, file=record.file,
                        fields=record.fields, stack=record.stack, ident=record.ident or ident)


encode = speedups.pick(encode)


# -- decoding (daemon side) ----------------------------------------------------------------
def _cut(raw: bytes, limit: int) -> bytes:
    """*raw* cut to at most *limit* bytes without splitting a UTF-8 sequence: a sequence the
    cut would split goes whole. (Bytes that are not UTF-8 stay as they are: a strict decode
    still refuses them.)"""
    if len(raw) <= limit:
        return raw
    raw = raw[:limit]
    start = len(raw) - 1
    while start > 0 and len(raw) - start < 4 and raw[start] & 0xC0 == 0x80:
        start -= 1
    lead = raw[start]
    size = 2 if 0xC0 <= lead < 0xE0 else 3 if 0xE0 <= lead < 0xF0 else \
        4 if 0xF0 <= lead < 0xF8 else 1
    return raw[:start] if start + size > len(raw) else raw


def _strict(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ProtocolError(f"invalid UTF-8 in {what} at byte {err.start}") from None


def _greeting_error(data: bytes) -> ProtocolError:
    if data[:len(MAGIC)] != MAGIC:
        return ProtocolError(f"not a virlogd client: bad greeting {bytes(data[:8])!r} "
                             f"(expected {HELLO!r})")
    return ProtocolError(f"unsupported protocol version {data[len(MAGIC)]} "
                         f"(this daemon speaks 1, 2 and 3)")


# -- acknowledgements (version 2) ---------------------------------------------------------
def encode_ack(count: int) -> bytes:
    """The daemon's answer after routing: records routed on this connection so far."""
    return ACK.pack(count)


class AckDecoder:
    """Cuts the daemon's answers (8-byte counts) out of a byte stream; keeps a partial one."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> Optional[int]:
        """The newest complete count in *data* (with what was held), or None."""
        data = self._pending + data
        whole = len(data) - len(data) % ACK.size
        self._pending = data[whole:]
        if not whole:
            return None
        return int(ACK.unpack_from(data, whole - ACK.size)[0])


# -- what the daemon tells a version 3 client -----------------------------------------------
def encode_answer(count: int) -> bytes:
    """Version 3's answer: records routed on this connection so far, tagged."""
    return _MSG_ANSWER.pack(ACK.size + 1, MSG_ANSWER, count)


def encode_wish(level: int, filters: str) -> bytes:
    """Version 3's wish: the daemon's default level (1-4) and its filters, in libvirt's
    syntax (``"1:qemu 3:remote"``; empty: none): what it wants from each source."""
    text = filters.encode("utf-8")
    return _MSG_HEAD.pack(2 + len(text), MSG_WISH) + bytes((level,)) + text


class Wish:
    """What the daemon wants: a priority per source, decided as the daemon decides
    (``filters.FilterSet``: first matching filter, else the level)."""

    __slots__ = ("level", "filters", "_set")

    def __init__(self, level: int, filters: str) -> None:
        specs, error = parse_filters(filters)
        if error is not None or level not in (1, 2, 3, 4):
            raise ProtocolError(f"invalid wish: level {level}, filters {filters!r}")
        self.level = level
        self.filters = filters
        self._set = FilterSet(specs, level)

    def threshold(self, source: str) -> int:
        """The lowest priority the daemon wants from *source*."""
        return self._set.decide(source)[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Wish) and (self.level, self.filters) == \
            (other.level, other.filters)

    def __hash__(self) -> int:
        return hash((self.level, self.filters))

    def __repr__(self) -> str:
        return f"Wish({self.level}, {self.filters!r})"


class MessageDecoder:
    """Cuts a version 3 daemon's messages out of a byte stream: ``feed()`` returns the
    newest count it completed (or None); ``wish`` is the newest wish. Unknown message types
    are skipped (a later version may add some); a message longer than ``MAX_MESSAGE`` or a
    wish that cannot be parsed raises ProtocolError."""

    def __init__(self) -> None:
        self._pending = b""
        self.wish: Optional[Wish] = None

    def feed(self, data: bytes) -> Optional[int]:
        data = self._pending + data if self._pending else bytes(data)
        count = None
        pos = 0
        end = len(data)
        while end - pos >= _MSG_HEAD.size:
            size, kind = _MSG_HEAD.unpack_from(data, pos)
            if not 1 <= size <= MAX_MESSAGE:
                raise ProtocolError(f"daemon message of {size} bytes")
            stop = pos + 4 + size
            if stop > end:
                break
            if kind == MSG_ANSWER and size == ACK.size + 1:
                count = ACK.unpack_from(data, pos + 5)[0]
            elif kind == MSG_WISH and size >= 2:
                try:
                    text = data[pos + 6:stop].decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolError("invalid UTF-8 in the daemon's wish") from None
                self.wish = Wish(data[pos + 5], text)
            pos = stop
        self._pending = data[pos:]
        return count


class FrameDecoder:
    """Cuts a byte stream into records; stateful, one per connection.

    ``feed(data)`` returns every record completed by *data*, in order. On malformed input it
    raises ProtocolError with a specific message; the records decoded before the bad frame
    are on the exception as ``err.records`` so the caller can still route them. After an
    error the decoder refuses everything (the connection must be closed).
    ``renamed`` counts field names that were invalid and renamed with fieldnames.sanitize.
    """

    def __init__(self, *, pid: Optional[int] = None, uid: Optional[int] = None,
                 gid: Optional[int] = None, max_frame: int = MAX_FRAME,
                 greeting: bool = True) -> None:
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.max_frame = max_frame
        self.greeted = not greeting
        self.renamed = 0
        self.failed: Optional[str] = None
        self.version = 0    # the client's protocol version, once greeted (0: no greeting)
        self._pending = bytearray()
        self._need = 0      # bytes the pending frame needs in all (0: unknown yet)

    @property
    def pending(self) -> int:
        """Bytes of an incomplete greeting or frame held for the next feed()."""
        return len(self._pending)

    @property
    def pending_need(self) -> int:
        """Bytes the incomplete greeting or frame held will take in all, length prefix
        included (0: nothing held, or its length not read yet); the daemon's budget of
        incomplete frames reserves this much (server.py)."""
        return self._need if self._pending else 0

    def feed(self, data: Any) -> List[Record]:
        if self.failed is not None:
            raise ProtocolError(self.failed)
        if self._pending:
            self._pending += data
            if len(self._pending) < self._need:
                return []
            buf = bytes(self._pending)
            self._pending.clear()
        else:
            buf = bytes(data)
        out: List[Record] = []
        try:
            pos = 0 if self.greeted else self._greet(buf)
            if pos < 0:
                return out
            self._need = 0
            pos = frames(self, buf, pos, out)
        except ProtocolError as err:
            self.failed = str(err)
            err.records = out  # type: ignore[attr-defined]  # read by the server
            raise
        if pos < len(buf):
            self._pending += buf[pos:]
        return out

    def _greet(self, buf: bytes) -> int:
        size = len(HELLO)
        if len(buf) < size:
            if buf != MAGIC[:len(buf)]:
                raise _greeting_error(buf)
            self._pending += buf
            self._need = size
            return -1
        if buf[:len(MAGIC)] != MAGIC or buf[len(MAGIC)] not in VERSIONS:
            raise _greeting_error(buf)
        self.version = buf[len(MAGIC)]
        self.greeted = True
        return size


def frames(decoder: FrameDecoder, buf: bytes, pos: int, out: List[Record],
           once: bool = False) -> int:
    """The decoder's loop: the records of the frames in *buf* from *pos* on, stamped with
    *decoder*'s pid, uid and gid, appended to *out* (only the first one if *once*). Returns
    where the first incomplete frame starts (``decoder._need`` then says how many bytes it
    takes in all), or ``len(buf)``; raises ProtocolError at the first malformed one."""
    end = len(buf)
    unpack = _HEAD.unpack_from
    append = out.append
    limit = decoder.max_frame
    pid, uid, gid = decoder.pid, decoder.uid, decoder.gid
    new_record = Record.__new__
    while end - pos >= 4:
        size = _LEN.unpack_from(buf, pos)[0]
        if size > limit:
            raise ProtocolError(f"frame of {size} bytes exceeds the {limit}-byte limit")
        stop = pos + 4 + size
        if stop > end:
            decoder._need = stop - pos
            return pos
        if size < _BODY_FIXED:
            raise ProtocolError(f"frame of {size} bytes is shorter than the "
                                f"{_BODY_FIXED}-byte record header")
        (_, kind, priority, nfields, line, when,
         ls, lm, lf, lp, lk, li) = unpack(buf, pos)
        if kind != TYPE_RECORD:
            raise ProtocolError(f"unknown frame type {kind}")
        if priority not in (1, 2, 3, 4):
            raise ProtocolError(f"invalid priority {priority}")
        if not 0.0 <= when <= MAX_TIME:     # also refuses NaN
            raise ProtocolError(f"invalid time {when!r}")
        a = pos + _HEAD_SIZE
        b = a + ls
        c = b + lm
        d = c + lf
        e = d + lp
        f = e + lk
        g = f + li
        if g > stop:
            raise ProtocolError(f"truncated strings: the header declares {g - a} bytes "
                                f"in a {size}-byte frame")
        try:
            source = (buf[a:b] if ls <= MAX_SOURCE else _cut(buf[a:b], MAX_SOURCE)) \
                .decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("invalid UTF-8 in source") from None
        # Record's slots filled directly: its keyword constructor costs half again as
        # much as everything else here (this is the daemon's hottest loop)
        record = new_record(Record)
        record.priority = priority
        record.source = source
        record.message = buf[b:c].decode("utf-8", "surrogateescape")
        record.time = when
        record.line = line
        record.func = _strict(buf[c:d] if lf <= MAX_FUNC else _cut(buf[c:d], MAX_FUNC),
                              "func") if lf else None
        record.file = (buf[d:e] if lp <= MAX_FILE else _cut(buf[d:e], MAX_FILE)) \
            .decode("utf-8", "surrogateescape") if lp else None
        record.stack = buf[e:f].decode("utf-8", "surrogateescape") if lk else None
        record.ident = _strict(buf[f:g] if li <= MAX_IDENT else _cut(buf[f:g], MAX_IDENT),
                               "ident") if li else None
        record.fields = _fields(decoder, buf, g, stop, nfields) if nfields else {}
        record.pid = pid  # type: ignore[assignment]  # None: a decoder told no pid
        record.uid = uid
        record.gid = gid
        record.relayed = True
        if not nfields and g != stop:
            raise ProtocolError(f"frame length mismatch: the record ends at byte "
                                f"{g - pos - 4} of a {size}-byte frame")
        append(record)
        pos = stop
        if once:
            break
    return pos


frames = speedups.pick(frames)


def _fields(decoder: FrameDecoder, buf: bytes, pos: int, stop: int,
            count: int) -> Dict[str, FieldValue]:
    if count > MAX_FIELDS:
        raise ProtocolError(f"too many fields ({count}, limit {MAX_FIELDS})")
    fields: Dict[str, FieldValue] = {}
    for index in range(1, count + 1):
        if pos + _FIELD_SIZE > stop:
            raise ProtocolError(f"truncated field {index} of {count}")
        name_len, kind, value_len = _FIELD.unpack_from(buf, pos)
        start = pos + _FIELD_SIZE
        pos = start + name_len + value_len
        if pos > stop:
            raise ProtocolError(f"truncated field {index} of {count}")
        name = buf[start:start + name_len].decode("latin-1")
        raw = buf[start + name_len:pos]
        if kind == KIND_TEXT:
            value: FieldValue = raw.decode("utf-8", "surrogateescape")
        elif kind == KIND_BYTES:
            value = raw
        else:
            raise ProtocolError(f"invalid kind {kind} for field {index} ({name!r})")
        if not fieldnames.is_valid(name):
            name = fieldnames.sanitize(name)
            decoder.renamed += 1
        fields[name] = value
    if pos != stop:
        raise ProtocolError(f"frame length mismatch: {stop - pos} bytes left after "
                            f"the last field")
    return fields
