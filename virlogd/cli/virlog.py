"""``virlog``: send records to virlogd from a shell, like ``logger``.

    virlog [-p PRIORITY] [-t TAG] [-s SOURCE] [-S SOCKET] [--field NAME=VALUE]... [MESSAGE...]

With MESSAGE, one record (the words joined by spaces); without, each line of standard input
is one record, sent as it arrives (so ``tail -f x | virlog`` works). ``logger``'s habits work,
so that scripts written for it need no change: ``-t TAG``, ``-p`` with syslog's level names
in any case and ``facility.level`` (the facility travels as the field
``priority.FACILITY_FIELD``). A line longer than one record holds (the 4 MiB frame limit) is
sent as several records, with a warning, never fatal. Unlike the library, ``virlog`` does not
hold records for a daemon that is away: it connects first and fails at once if it cannot
(exit 1). It also confirms delivery: once everything is sent it shuts down
its side and waits for the daemon's end of file, which the daemon sends only after it has
routed (and flushed) everything it read — so exit 0 means the records reached the outputs.

Exit statuses: 0 all delivered; 1 daemon unreachable or lost; 2 usage error.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

from .. import __version__
from ..core import defaults, fieldnames
from ..protocol import wire
from ..client.client import choose_socket, read_answers, tried_paths
from ..core.priority import FACILITY_FIELD, parse_logger_priority
from ..protocol.replay import Replay

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


def _connect(path: str, absent=()) -> socket.socket:
    """*absent*: the default sockets looked at before *path*, which do not exist."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        raise Failure(f"cannot connect to virlogd at {path}: {err.strerror or err}"
                      f"{tried_paths(path, absent)} (is virlogd running?)") from None
    return sock


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


def _reconnect(path: str, why: OSError) -> socket.socket:
    """A new connection after the daemon went away mid-stream (restarted, most likely)."""
    print(f"{PROG}: warning: lost connection to virlogd at {path}: {why.strerror or why}; "
          f"reconnecting", file=sys.stderr)
    deadline = time.monotonic() + RECONNECT_FOR
    delay = 0.05
    while True:
        try:
            sock = _connect(path)
            sock.sendall(wire.HELLO)
            return sock
        except (Failure, OSError) as err:
            if time.monotonic() > deadline:
                raise Failure(f"lost connection to virlogd at {path}: {why.strerror or why}; "
                              f"no daemon came back within {RECONNECT_FOR:.0f} s") from err
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class _Answers:
    """The daemon's answers on one connection, for *replay*. An admin socket answers a
    client's greeting with a JSON line (``admin.NOT_CLIENT_SOCKET``) instead: -S named the
    wrong socket, a Failure that says so (a count's first bytes are never ``{"ok"``: that
    would be some 10^13 records)."""

    def __init__(self, replay: Replay, path: str) -> None:
        self.replay = replay
        self.path = path
        self.first = True

    def answer(self, data: bytes) -> None:
        if self.first:
            self.first = False
            if data.startswith(b'{"ok"'):
                raise Failure(f"{self.path} is virlogd's admin socket, for virlogd-admin, not "
                              f"its client socket: give -S the client socket (virlogd's "
                              f"--socket); nothing was delivered")
        self.replay.answer(data)


def send(path: str, batches: Iterator[List[bytes]], absent=()) -> None:
    """Connect, send every batch, then wait for the daemon to confirm it read them all.

    A daemon that goes away mid-stream (a restart, even a SIGKILL) is waited for, and what it
    had not acknowledged is sent again, first (``replay.Replay``): nothing is lost, and a
    record the dead daemon routed just before it died may arrive twice."""
    sock = _connect(path, absent)
    replay = Replay(REPLAY_LIMIT)
    answers = _Answers(replay, path)
    try:
        try:
            sock.sendall(wire.HELLO)
            for frames in batches:
                while True:
                    try:
                        sock.sendall(b"".join(frames))
                    except OSError as err:
                        read_answers(sock, answers)
                        frames, lost = replay.lost_connection(frames)
                        sock.close()
                        sock = _reconnect(path, err)
                        answers = _Answers(replay, path)
                        if lost:
                            print(f"{PROG}: warning: {lost} record(s) sent to the stopped "
                                  f"daemon were never confirmed", file=sys.stderr)
                        continue
                    replay.sent(frames)
                    read_answers(sock, answers)
                    break
            sock.shutdown(socket.SHUT_WR)
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                answers.answer(data)
        except OSError as err:
            raise Failure(f"lost connection to virlogd at {path}: {err.strerror or err}") \
                from None
    finally:
        sock.close()


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
