"""``virlog``: send records to virlogd from a shell, like ``logger``.

    virlog [-p PRIORITY] [-t TAG] [-s SOURCE] [-S SOCKET] [--field NAME=VALUE]... [MESSAGE...]

With MESSAGE, one record (the words joined by spaces); without, each line of standard input
is one record, sent as it arrives (so ``tail -f x | virlog`` works). ``logger``'s habits work,
so that scripts written for it need no change: ``-t TAG``, ``-p`` with syslog's level names
in any case and ``facility.level`` (the facility travels as the field
``priority.FACILITY_FIELD``). A line longer than one record holds (the 4 MiB frame limit) is
sent as several records, with a warning, never fatal.

Unlike the library, ``virlog`` does not hold records for a daemon that is away: it connects
first and fails at once if it cannot (exit 1). It also confirms delivery (``Client.drain``):
once everything is sent it shuts down its side and waits for the daemon's end of file, which
the daemon sends only after it has routed (and flushed) everything it read, so exit 0 means
the records reached the outputs. The connection, the replay of what a daemon that went away
had not confirmed, and the count of what was not delivered are the library's ``Client``;
``virlog`` adds a bound on the wait for a daemon that went away, and its own words for each
failure.

Exit statuses: 0 all delivered; 1 daemon unreachable or lost; 2 usage error.
"""
from __future__ import annotations

import argparse
import errno
import io
import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

from .. import __version__
from ..core import defaults, fieldnames
from ..protocol import wire
from ..client.client import Client, choose_socket, tried_paths
from ..core.priority import FACILITY_FIELD, parse_logger_priority

PROG = "virlog"
READ_SIZE = 64 * 1024
REPLAY_LIMIT = 100_000   # unacknowledged records kept; a socket buffer holds a few thousand


class Failure(Exception):
    """Something the user must be told; ``str()`` is the sentence (exit 1)."""


def _priority(text: str) -> tuple:
    try:
        return parse_logger_priority(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _source(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Send log records to virlogd, like logger(1).",
        epilog="With no MESSAGE, each line of standard input is one record.")
    p.add_argument("-p", "--priority", type=_priority, default=(2, None), metavar="PRIORITY",
                   help="1-4, or a level as logger(1) takes it, alone or as FACILITY.LEVEL "
                        "(daemon.warning, local3.err); levels of any case: emerg, alert, crit, "
                        "err(or) -> error; warn(ing) -> warning; notice, info -> info; debug "
                        "(default: info); the facility goes to syslog, remote and journald "
                        "outputs")
    p.add_argument("-s", "--source", type=_source, default=None, metavar="SOURCE",
                   help="the source name filters match (default: the TAG, else virlog)")
    p.add_argument("-t", "--tag", type=_source, default=None, metavar="TAG",
                   help="as in logger(1): the program name (journald's SYSLOG_IDENTIFIER, "
                        "a collector's APP-NAME), and the source unless -s is given")
    p.add_argument("-S", "--socket", metavar="SOCKET", default=None,
                   help="virlogd's client socket (default: %s)"
                        % ", if it exists, else ".join(defaults.client_socket_candidates()))
    p.add_argument("--field", action="append", default=[], metavar="NAME=VALUE",
                   help="attach a field, e.g. MESSAGE_ID=...; repeatable")
    p.add_argument("message", nargs="*", metavar="MESSAGE", help="the message")
    p.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    return p


def parse_field(text: str) -> tuple:
    """``NAME=VALUE`` -> (name, value); ValueError with the sentence for the user."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"--field '{text}' must be NAME=VALUE")
    try:
        fieldnames.check(name)
    except ValueError as err:
        # "invalid field name 'x-y': ..." -> "invalid field name 'x-y' in --field: ..."
        raise ValueError(str(err).replace(f"'{name}'", f"'{name}' in --field", 1)) from None
    return name, value


def _cut(data, limit: int) -> int:
    """Where to cut *data* (longer than *limit* bytes) so that the first part fits: at
    *limit*, or up to 3 bytes before it so as not to split a UTF-8 character."""
    cut = limit
    while cut > limit - 3 and cut > 1 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut if data[cut] & 0xC0 != 0x80 else limit


def _pieces(data: bytes, limit: int, ends: bool) -> List[Tuple[bytes, bool]]:
    """*data* as ``(piece, ends_line)`` pieces of at most *limit* bytes (see _stdin_lines)."""
    out = []
    while len(data) > limit:
        cut = _cut(data, limit)
        out.append((data[:cut], False))
        data = data[cut:]
    out.append((data, ends))
    return out


def _stdin_lines(limit: int) -> Iterator[List[Tuple[bytes, bool]]]:
    """Batches of ``(line, True)`` as the lines arrive; the last line may lack its newline.
    A line longer than *limit* bytes (what one record holds) comes as pieces of at most
    *limit* bytes, ``(piece, False)`` until its last, sent as they arrive: one endless line
    (``tail -f`` of a file without newlines) never fills the memory."""
    fd = sys.stdin.fileno()
    rest = bytearray()
    while True:
        chunk = os.read(fd, READ_SIZE)
        if not chunk:
            if rest:
                yield _pieces(bytes(rest), limit, True)
            return
        if b"\n" not in chunk:
            rest += chunk
            if len(rest) <= limit:
                continue
            *pieces, last = _pieces(bytes(rest), limit, False)
            rest = bytearray(last[0])
            yield pieces
            continue
        lines = chunk.split(b"\n")
        if rest:
            lines[0] = bytes(rest) + lines[0]
        rest = bytearray(lines.pop())
        batch: List[Tuple[bytes, bool]] = []
        for line in lines:
            if len(line) > limit:
                batch += _pieces(line, limit, True)
            else:
                batch.append((line, True))
        if len(rest) > limit:
            *pieces, last = _pieces(bytes(rest), limit, False)
            rest = bytearray(last[0])
            batch += pieces
        yield batch


def _split_warning(what: str, size: int, limit: int, count: int) -> None:
    print(f"{PROG}: warning: {what} ({size} bytes) is longer than one record holds "
          f"({limit} bytes): sent as {count} records", file=sys.stderr)


def _batches(args, fields) -> Iterator[List[bytes]]:
    priority = args.priority[0]
    source = args.source or args.tag or "virlog"

    def frame(message: bytes) -> bytes:
        try:
            return wire.encode_parts(priority, source,
                                     message.decode("utf-8", "surrogateescape"),
                                     time=time.time(), fields=fields, ident=args.tag)
        except ValueError as err:
            raise Failure(str(err)) from None
    # the bytes of message one record holds: the frame limit less the rest of the record
    limit = max(1, wire.MAX_FRAME - (len(frame(b"")) - 4))
    if args.message:
        text = " ".join(args.message).encode("utf-8", "surrogateescape")
        pieces = _pieces(text, limit, True)
        if len(pieces) > 1:
            _split_warning("the message", len(text), limit, len(pieces))
        yield [frame(piece) for piece, _ in pieces]
        return
    number, long_size, long_count = 1, 0, 0
    for lines in _stdin_lines(limit):
        frames = []
        for piece, ends in lines:
            frames.append(frame(piece))
            if not ends or long_count:
                long_size += len(piece)
                long_count += 1
            if ends:
                if long_count:
                    _split_warning(f"line {number} of standard input", long_size, limit,
                                   long_count)
                    long_size = long_count = 0
                number += 1
        yield frames


RECONNECT_FOR = 30.0     # seconds a streaming virlog waits for a restarted daemon
# what the client's last_error says when the daemon closed a connection it had accepted
_DROPPED = (os.strerror(errno.EPIPE), os.strerror(errno.ECONNRESET))


class _Sender:
    """A ``Client`` with virlog's rules: connected at the start or a failure, a bounded
    wait for a daemon that goes away mid-stream, delivery confirmed at the end."""

    def __init__(self, path: str, absent=()) -> None:
        self.path = path
        self.client = Client(path, hold=REPLAY_LIMIT)
        self.client.on_lost.append(self._lost)
        self.client.on_wish.append(self._wished)
        self._served = False                    # the daemon greeted us with its wishes
        self._refused: Optional[str] = None
        self._lost_since: Optional[float] = None
        self._dropped = 0
        if not self.client.open():
            self.close()
            why = self.client.last_error
            if why in _DROPPED:     # connected, then dropped (a daemon with too many clients)
                raise Failure(f"lost connection to virlogd at {path}: {why}")
            raise Failure(f"cannot connect to virlogd at {path}: {why}"
                          f"{tried_paths(path, absent)} (is virlogd running?)")

    def _wished(self, wish) -> None:
        if wish is not None:
            self._served = True

    def _lost(self, why: str) -> None:
        # called by the client mid-send; it reconnects by itself, and send() waits for it.
        # A daemon that serves a client greets it with its wishes first: dropped before any
        # greeting, we were refused (too many clients), which no wait would mend.
        if not self._served:
            self._refused = why
            return
        if self._lost_since is None:
            self._lost_since = time.monotonic()
            print(f"{PROG}: warning: lost connection to virlogd at {self.path}: {why}; "
                  f"reconnecting", file=sys.stderr)
        lost = self.client.dropped_total - self._dropped
        self._dropped = self.client.dropped_total
        if lost:
            print(f"{PROG}: warning: {lost} record(s) sent to the stopped daemon were never "
                  f"confirmed", file=sys.stderr)

    def send(self, frames: List[bytes]) -> None:
        """Send *frames*; after a lost connection, wait (at most RECONNECT_FOR) until they
        have reached a new one: stdin is not read meanwhile, so nothing piles up."""
        for frame in frames:
            self.client.send_frame(frame)
        self._check()
        if self._lost_since is None and self.client.connected:
            return
        since = time.monotonic() if self._lost_since is None else self._lost_since
        delay = 0.05
        while not self.client.flush():
            self._check()
            if time.monotonic() > since + RECONNECT_FOR:
                raise Failure(f"lost connection to virlogd at {self.path}: "
                              f"{self.client.last_error}; no daemon came back within "
                              f"{RECONNECT_FOR:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        self._lost_since = None

    def _check(self) -> None:
        if self._refused is not None:
            raise Failure(f"lost connection to virlogd at {self.path}: {self._refused}")
        # An admin socket answers a client's greeting with a JSON line (the client's
        # ``refused``): -S named the wrong socket, which no wait would mend.
        if self.client.refused is not None:
            raise Failure(f"{self.path} is virlogd's admin socket, for virlogd-admin, not its "
                          f"client socket: give -S the client socket (virlogd's --socket); "
                          f"nothing was delivered")

    def confirm(self) -> None:
        """Wait until the daemon confirms it routed everything. One attempt: a connection
        lost now is a failure (a daemon refusing us, too many clients), not a wait."""
        self.client.on_lost.remove(self._lost)
        if not self.client.drain(timeout=0):
            self._check()
            raise Failure(f"lost connection to virlogd at {self.path}: "
                          f"{self.client.last_error}")

    def close(self) -> None:
        """Close the client without its own line about undelivered records: virlog's error
        says what went wrong, in its words."""
        self.client.report_undelivered(io.StringIO())
        self.client.close()


def send(path: str, batches: Iterator[List[bytes]], absent=()) -> None:
    """Connect, send every batch, then wait for the daemon to confirm it routed them all.

    A daemon that goes away mid-stream (a restart, even a SIGKILL) is waited for, and what it
    had not confirmed is sent again, first (the client's replay): nothing is lost, and a
    record the dead daemon routed just before it died may arrive twice."""
    sender = _Sender(path, absent)
    try:
        for frames in batches:
            sender.send(frames)
        sender.confirm()
    finally:
        sender.close()


def main(argv: Optional[List[str]] = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    fields: Dict[str, str] = {}
    for text in args.field:
        try:
            name, value = parse_field(text)
        except ValueError as err:
            p.error(str(err))
        fields[name] = value
    facility = args.priority[1]
    if facility is not None:        # -p FACILITY.LEVEL: for the outputs that speak syslog
        fields[FACILITY_FIELD] = str(facility)
    # no -S: the per-user socket if it exists, else the system one, so that a user's own
    # daemon wins and the system's still serves users who run none
    path, absent = (args.socket, []) if args.socket else \
        choose_socket(defaults.client_socket_candidates())
    try:
        send(path, _batches(args, fields or None), absent)
    except Failure as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def main_entry() -> None:
    sys.exit(main())
