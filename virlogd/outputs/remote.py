"""``x:remote:tcp://HOST:PORT`` / ``x:remote:tls://HOST:PORT``: forwarding to a collector.

Each record becomes one RFC 5424 message in RFC 6587 octet-counting framing
(``LEN SP MSG``), which rsyslog (imtcp) and syslog-ng (``syslog()`` source) read as they are:

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [virlogd@32473 source=".." ...] MSG

* PRI: facility (daemon, 3, unless the record carries its own: ``priority.facility_of``) * 8 +
  libvirt's severity map (debug 7, info 6, warning 4, err 3).
* TIMESTAMP: the record's time, UTC, microseconds. HOSTNAME: this host.
* APP-NAME: the client's ident, else ``ctx.ident``; PROCID: the record's (trusted) pid.
* MSGID: always ``-``. A journal ``MESSAGE_ID`` is a 128-bit id (36 characters with dashes,
  as libvirt writes it) and does not fit MSGID's 32 characters, so it travels unchanged in the
  structured data like every other field.
* SD: one element ``virlogd@32473`` (32473 is the enterprise number RFC 5612 reserves for
  documentation: virlogd has none of its own) with ``source``, ``func``, ``line``, ``file``
  when known, then the record's fields by name. Names are cut to 32 characters (RFC 5424
  allows a name to repeat); ``"``, ``\\`` and ``]`` in values are escaped.
* Every PARAM-VALUE is UTF-8 (RFC 5424 §6.3.3), whatever the client sent: a byte that is not
  part of valid UTF-8 (a field value, or a relayed syslog tag in ``source``) is written as
  the four characters ``\\xHH`` (lower-case hex), and a backslash that is followed by ``x``
  in the value itself is written ``\\x5c``, so the rule is reversible: after the collector
  has undone the SD escapes, every ``\\xHH`` is the byte HH and nothing else changed
  (``reversible()``; its inverse is ``unreversible()``). APP-NAME and HOSTNAME are printable
  US-ASCII: anything else there becomes ``_`` (the record's ``source`` keeps the real tag).
* MSG (§6.4): a message that is valid UTF-8 and pure ASCII goes as it is; one with other
  characters is MSG-UTF8, preceded by the BOM (a message that itself starts with U+FEFF gets
  the BOM before it, so the collector, which removes one, keeps the message's); a message that
  is not valid UTF-8 gets the escapes above and then the same rule, so a collector never
  receives a BOM followed by bytes that are not UTF-8. Newlines are left for the collector.

Delivery: ``handle()`` only formats and queues; a sender thread owns the connection, so a slow
or absent collector never blocks the daemon. The queue holds ``ctx.remote_queue_size``
records; while the collector is unreachable records wait there and go out in order once it is
back (reconnecting with a backoff from 0.1 to 5 s). When the queue is full the oldest held
record is dropped to make room (as the library's client does), and counted (``dropped``);
once the collector is back it first receives one warning record saying how many were lost,
then the held records in order. ``flush()`` never waits (the daemon calls it after
every batch): it wakes the sender and raises, at most once per failure, the last connection
error so the router counts and reports it. ``close()`` waits up to ``CLOSE_WAIT`` seconds for
the queue to go out, then stops the thread.

A collector never writes to us, so before each send the connection is checked for readability:
a closed collector (EOF/RST) is noticed before records are written into a dead socket.
"""
from __future__ import annotations

import collections
import functools
import re
import select
import socket
import ssl
import sys
import threading
import time
from typing import Deque, List, Optional, Tuple, Union

from ..core.priority import SYSLOG_SEVERITY, facility_of
from ..core.record import Record
from .base import Output

FACILITY_DAEMON = 3
SD_ID = "virlogd@32473"
CLOSE_WAIT = 2.0            # seconds close() waits for the queue to go out
CONNECT_TIMEOUT = 5.0
SEND_TIMEOUT = 10.0         # a collector that stops reading: reconnect after this long
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
BATCH_BYTES = 64 * 1024     # bytes per sendall()

_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")
_NOT_SD_NAME = re.compile(r'[^\x21-\x7e]|[= \]"]')
_SD_ESCAPE = re.compile(r'(["\\\]])')


# -- formatting (pure) -----------------------------------------------------------------------
def parse_url(url: str) -> Tuple[str, str, int]:
    """``tls://host:514`` -> ``("tls", "host", 514)``; IPv6 hosts come in brackets."""
    scheme, _, rest = url.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("tcp", "tls") or not host or not port.isdigit():
        raise ValueError(f"invalid remote URL '{url}' (expected tcp://HOST:PORT or "
                         f"tls://HOST:PORT)")
    return scheme, host.strip("[]"), int(port)


@functools.lru_cache(maxsize=1024)
def header_token(text: Optional[str], limit: int) -> str:
    """A header field: printable US-ASCII, at most *limit* characters, ``-`` when empty."""
    if not text:
        return "-"
    return _NOT_PRINTUSASCII.sub("_", text)[:limit]


@functools.lru_cache(maxsize=1024)
def sd_name(name: str) -> str:
    return _NOT_SD_NAME.sub("_", name)[:32] or "_"


def reversible(text: str) -> str:
    """*text* as valid UTF-8: the bytes that were not (surrogateescape's U+DC80-U+DCFF, or
    any other lone surrogate as its UTF-8 bytes) as ``\\xHH``, and a backslash followed by
    ``x`` as ``\\x5c``, so that every ``\\xHH`` of the result is one byte."""
    if "\\x" in text:
        text = text.replace("\\x", "\\x5cx")
    if text.isascii():                  # the usual value: no surrogate can be there
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(_escape_surrogate, text)
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_BYTE = re.compile(rb"\\x([0-9a-f]{2})")


def _escape_surrogate(found) -> str:
    code = ord(found.group(0))
    if 0xDC80 <= code <= 0xDCFF:            # a byte surrogateescape carried
        return f"\\x{code - 0xDC00:02x}"
    return "".join(f"\\x{byte:02x}" for byte in found.group(0).encode("utf-8", "surrogatepass"))


def unreversible(text: str) -> bytes:
    """The inverse of ``reversible`` (for readers of a collector's files, and the tests)."""
    return _ESCAPED_BYTE.sub(lambda m: bytes((int(m.group(1), 16),)), text.encode("utf-8"))


def sd_value(value: Union[str, bytes, int]) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    value = reversible(str(value))
    if '"' in value or "\\" in value or "]" in value:
        return _SD_ESCAPE.sub(r"\\\1", value)
    return value


BOM = "\ufeff"


def msg_part(message: str) -> str:
    """MSG by RFC 5424 §6.4: ASCII as it is, anything else UTF-8 after a BOM."""
    if message.isascii():
        return message
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        message = reversible(message)
    return message if message.isascii() else BOM + message


_second_cache = [-1, ""]


def rfc3339(when: float) -> str:
    """``2026-11-23T14:29:04.771000Z``; the part down to the second is cached."""
    micros = int(round(when * 1_000_000))
    seconds, fraction = divmod(micros, 1_000_000)
    if _second_cache[0] != seconds:
        _second_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second_cache[0] = seconds
    return f"{_second_cache[1]}.{fraction:06d}Z"


def structured_data(record: Record) -> str:
    params = [("source", record.source)]
    if record.func:
        params.append(("func", record.func))
    if record.line:
        params.append(("line", record.line))
    if record.file:
        params.append(("file", record.file))
    params.extend(record.fields.items())
    body = " ".join(f'{sd_name(name)}="{sd_value(value)}"' for name, value in params)
    return f"[{SD_ID} {body}]"


def format_message(record: Record, hostname: str, ident: str) -> bytes:
    """One RFC 5424 message (without framing)."""
    pri = facility_of(record) * 8 + SYSLOG_SEVERITY.get(record.priority, 6)
    head = (f"<{pri}>1 {rfc3339(record.time)} {header_token(hostname, 255)} "
            f"{header_token(record.ident or ident, 48)} {record.pid} - "
            f"{structured_data(record)}")
    message = record.message
    if message:
        head = f"{head} {msg_part(message)}"
    return head.encode("utf-8")


def frame(message: bytes) -> bytes:
    """RFC 6587 octet counting: ``LEN SP MSG``."""
    return b"%d %s" % (len(message), message)


# -- the output ------------------------------------------------------------------------------
class RemoteOutput(Output):
    def __init__(self, spec, ctx) -> None:
        super().__init__(spec, ctx)
        self.url = spec.name
        self.scheme, self.host, self.port = parse_url(self.url)
        self.capacity = max(1, int(ctx.remote_queue_size))
        self._ssl = self._ssl_context(ctx.remote_ca_file) if self.scheme == "tls" else None
        self._queue: Deque[bytes] = collections.deque()   # framed messages, oldest first
        self._gap = 0                     # dropped and not yet reported to the collector
        self._in_flight = 0               # frames at the front being sent right now
        self._cond = threading.Condition()
        self._closing = False
        self._close_deadline = 0.0
        self._error_new = False
        self._sock: Optional[socket.socket] = None
        self._thread = threading.Thread(target=self._run, name=f"virlogd-remote {self.url}",
                                        daemon=True)
        self._thread.start()

    def _ssl_context(self, ca_file: Optional[str]) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        except (OSError, ssl.SSLError) as err:
            reason = getattr(err, "strerror", None) or str(err)
            raise ValueError(f"cannot load the CA file '{ca_file}' (remote_ca_file): "
                             f"{reason}") from None
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    # -- the caller's side (never blocks on the network) -----------------------------
    def handle(self, record: Record, line: str) -> None:
        data = frame(format_message(record, self.ctx.hostname, self.ctx.ident))
        with self._cond:
            if self._closing:
                return
            queue = self._queue
            if len(queue) >= self.capacity:
                # full: the oldest record not already being sent makes room
                self._gap += 1
                self.dropped += 1
                if self._in_flight >= len(queue):
                    return
                del queue[self._in_flight]
            queue.append(data)
            self._cond.notify()

    def flush(self) -> None:
        with self._cond:
            self._cond.notify()
            if not self._error_new:
                return
            self._error_new = False
            error = self.last_error
            held = len(self._queue)
        raise ConnectionError(f"{error}; holding {held} record{'s' if held != 1 else ''} "
                              f"(queue of {self.capacity})")

    def wait_sent(self, timeout: float) -> bool:
        """Wait until everything queued has been sent; False if *timeout* ran out first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight or self._gap:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.notify_all()
                self._cond.wait(min(left, 0.05))
        return True

    def close(self) -> None:
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._close_deadline = time.monotonic() + CLOSE_WAIT
            self._cond.notify_all()
        self._thread.join(CLOSE_WAIT + 1.0)
        with self._cond:
            lost = len(self._queue) + self._gap
            self.dropped += len(self._queue)
        if lost:
            # nowhere else to say it: the other outputs may already be closed
            sys.stderr.write(f"virlogd: warning: output '{self.spec}': {lost} record"
                             f"{'s' if lost != 1 else ''} not delivered at exit "
                             f"({self.last_error or 'the collector did not take them in time'})"
                             f"\n")

    # -- the sender thread -----------------------------------------------------------
    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        while True:
            with self._cond:
                while not (self._queue or self._gap or self._closing):
                    self._cond.wait()
                if self._closing and (not (self._queue or self._gap)
                                      or time.monotonic() >= self._close_deadline):
                    break
            if self._sock is None or self._peer_closed():
                if not self._connect():
                    self._sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                backoff = BACKOFF_FIRST
            self._send_some()
        self._disconnect()

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            if self._closing:
                seconds = min(seconds, max(0.0, self._close_deadline - time.monotonic()))
            self._cond.wait(seconds)

    def _connect(self) -> bool:
        self._disconnect()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        except OSError as err:
            self._failed(f"cannot connect to {self.url}: {err.strerror or err}")
            return False
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(SEND_TIMEOUT)
        except ssl.SSLCertVerificationError as err:
            sock.close()
            self._failed(f"TLS handshake with {self.url} failed: {err.verify_message} "
                         f"(checked against {self.ctx.remote_ca_file or 'the system CAs'})")
            return False
        except (OSError, ssl.SSLError) as err:
            sock.close()
            self._failed(f"TLS handshake with {self.url} failed: "
                         f"{getattr(err, 'reason', None) or err.strerror or err}")
            return False
        self._sock = sock
        return True

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _peer_closed(self) -> bool:
        """True if the collector closed the connection (it never sends us data; a TLS
        server's session tickets are read and ignored)."""
        sock = self._sock
        for _ in range(8):
            ready, _w, _x = select.select([sock], [], [], 0)
            if not ready and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                return False
            try:
                sock.setblocking(False)
                try:
                    if not sock.recv(4096):
                        return True
                finally:
                    sock.settimeout(SEND_TIMEOUT)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            except OSError:
                return True
        return False

    def _send_some(self) -> None:
        with self._cond:
            gap, self._gap = self._gap, 0
            items: List[bytes] = []
            size = 0
            for item in self._queue:
                if items and size >= BATCH_BYTES:
                    break
                items.append(item)
                size += len(item)
            self._in_flight = len(items)
        # the drop report comes first: the records dropped were older than those held
        data = b"".join(items) if not gap else self._gap_frame(gap) + b"".join(items)
        try:
            self._sock.sendall(data)
        except OSError as err:
            self._disconnect()
            self._failed(f"lost the connection to {self.url}: {err.strerror or err}")
            with self._cond:
                self._gap += gap
                self._in_flight = 0
                self._cond.notify_all()
            return
        with self._cond:
            for _ in range(len(items)):
                self._queue.popleft()
            self._in_flight = 0
            self._cond.notify_all()

    def _gap_frame(self, count: int) -> bytes:
        report = Record(3, "virlogd.remote",
                        f"virlogd dropped the {count} oldest record"
                        f"{'s' if count != 1 else ''} held for {self.url}: the queue of "
                        f"{self.capacity} records was full while the collector was "
                        f"unreachable", pid=self.ctx.pid)
        return frame(format_message(report, self.ctx.hostname, self.ctx.ident))

    def _failed(self, message: str) -> None:
        with self._cond:
            if message != self.last_error or not self._error_new:
                self.last_error = message
                self._error_new = True
