"""``virlog``: send records to virlogd from a shell, like ``logger``.

    virlog [-p PRIORITY] [-s SOURCE] [-S SOCKET] [--field NAME=VALUE]... [MESSAGE...]

With MESSAGE, one record (the words joined by spaces); without, each line of standard input
is one record, sent as it arrives (so ``tail -f x | virlog`` works). Unlike the library,
``virlog`` does not hold records for a daemon that is away: it connects first and fails at
once if it cannot (exit 1). It also confirms delivery: once everything is sent it shuts down
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
from typing import Dict, Iterator, List, Optional

from . import __version__, defaults, fieldnames, wire
from .client import read_answers
from .priority import parse_priority
from .replay import Replay

PROG = "virlog"
READ_SIZE = 64 * 1024
REPLAY_LIMIT = 100_000   # unacknowledged records kept; a socket buffer holds a few thousand


class Failure(Exception):
    """Something the user must be told; ``str()`` is the sentence (exit 1)."""


def _priority(text: str) -> int:
    try:
        return parse_priority(text)
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
    p.add_argument("-p", "--priority", type=_priority, default=2, metavar="PRIORITY",
                   help="1-4 or debug, info, warning, error (default: info)")
    p.add_argument("-s", "--source", type=_source, default="virlog", metavar="SOURCE",
                   help="the source name filters match (default: virlog)")
    p.add_argument("-S", "--socket", metavar="SOCKET", default=None,
                   help="virlogd's client socket (default: %s)" % defaults.socket_path())
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


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        raise Failure(f"cannot connect to virlogd at {path}: {err.strerror or err} "
                      f"(is virlogd running?)") from None
    return sock


def _stdin_lines() -> Iterator[List[bytes]]:
    """Batches of complete lines as they arrive; the last line may lack its newline."""
    fd = sys.stdin.fileno()
    rest = b""
    while True:
        chunk = os.read(fd, READ_SIZE)
        if not chunk:
            if rest:
                yield [rest]
            return
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        if lines:
            yield lines


def _batches(args, fields) -> Iterator[List[bytes]]:
    def frame(message: str) -> bytes:
        try:
            return wire.encode_parts(args.priority, args.source, message, time=time.time(),
                                     fields=fields)
        except ValueError as err:
            raise Failure(str(err)) from None
    if args.message:
        yield [frame(" ".join(args.message))]
        return
    for lines in _stdin_lines():
        yield [frame(line.decode("utf-8", "surrogateescape")) for line in lines]


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


def send(path: str, batches: Iterator[List[bytes]]) -> None:
    """Connect, send every batch, then wait for the daemon to confirm it read them all.

    A daemon that goes away mid-stream (a restart, even a SIGKILL) is waited for, and what it
    had not acknowledged is sent again, first (``replay.Replay``): nothing is lost, and a
    record the dead daemon routed just before it died may arrive twice."""
    sock = _connect(path)
    replay = Replay(REPLAY_LIMIT)
    try:
        try:
            sock.sendall(wire.HELLO)
            for frames in batches:
                while True:
                    try:
                        sock.sendall(b"".join(frames))
                    except OSError as err:
                        read_answers(sock, replay)
                        frames, lost = replay.lost_connection(frames)
                        sock.close()
                        sock = _reconnect(path, err)
                        if lost:
                            print(f"{PROG}: warning: {lost} record(s) sent to the stopped "
                                  f"daemon were never confirmed", file=sys.stderr)
                        continue
                    replay.sent(frames)
                    read_answers(sock, replay)
                    break
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
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
    path = args.socket or defaults.socket_path()
    try:
        send(path, _batches(args, fields or None))
    except Failure as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def main_entry() -> None:
    sys.exit(main())
