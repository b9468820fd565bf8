"""``virlogd-admin``: change and inspect a running virlogd, like libvirt's ``virt-admin``.

    virlogd-admin [-S PATH] daemon-log-filters [FILTERS [--for DURATION]]
    virlogd-admin [-S PATH] daemon-log-outputs [OUTPUTS [--for DURATION]]
    virlogd-admin [-S PATH] daemon-log-level [LEVEL [--for DURATION]]
    virlogd-admin [-S PATH] dump
    virlogd-admin [-S PATH] stats [--json | --openmetrics]
    virlogd-admin [-S PATH] follow [--filters FILTERS] [--json]

A get prints virt-admin's line (`` Logging filters: 3:remote 4:event``); a set prints
nothing. The daemon validates everything (one grammar, one wording: see ``admin.py`` for the
protocol); this side only carries the request and shows the answer.

A set ``--for 10m`` reverts by itself when the time is up (``timebox.py``); a get then says
what the value reverts to and when. ``follow`` streams the records the daemon receives until
it is interrupted (Ctrl-C: exit 0).

Exit statuses: 0 done; 1 the daemon refused the request or could not be reached; 2 a usage
error (argparse's convention). Never a traceback.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
from typing import Any, Dict, List, Optional, Tuple

from .. import __version__
from ..core import defaults
from ..daemon.follow import record_from_json
from .metrics import render as render_openmetrics
from ..core.textformat import format_line
from ..daemon.timebox import format_duration

PROG = "virlogd-admin"
TIMEOUT = 30.0          # seconds; a dump of a large buffer to slow outputs takes a while
MAX_ANSWER = 16 * 1024 * 1024

LABELS = {"daemon-log-filters": "Logging filters",
          "daemon-log-outputs": "Logging outputs",
          "daemon-log-level": "Logging level"}


class AdminError(Exception):
    """Anything that ends the command with status 1; ``str()`` is the message."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Change and inspect a running virlogd without restarting it "
        "(changes last until the daemon restarts).")
    p.add_argument("-S", "--socket", metavar="PATH",
                   help=f"admin socket (default: {defaults.admin_socket_path()})")
    p.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd, what, arg in (
            ("daemon-log-filters", "filters", "FILTERS"),
            ("daemon-log-outputs", "outputs", "OUTPUTS")):
        c = sub.add_parser(cmd, help=f"show the log {what}, or set them to {arg}",
                           description=f"With no argument, show the log {what}; with "
                           f"{arg}, replace them (all or nothing). An empty string "
                           + ("clears the filters." if what == "filters"
                              else "restores the default output."))
        c.add_argument("value", metavar=arg, nargs="?")
        _add_for(c)
    c = sub.add_parser("daemon-log-level", help="show the default log level, or set it",
                       description="With no argument, show the default priority; with "
                       "LEVEL (1-4 or debug, info, warning, error), set it.")
    c.add_argument("value", metavar="LEVEL", nargs="?")
    _add_for(c)
    sub.add_parser("dump", help="write the ring buffer to the outputs (like SIGUSR2)")
    c = sub.add_parser("stats", help="records received, written, dropped; clients; buffer; "
                       "followers; timed changes")
    shown = c.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print the statistics as JSON")
    shown.add_argument("--openmetrics", action="store_true",
                       help="print the statistics in the OpenMetrics (Prometheus) text format")
    c = sub.add_parser("follow", help="show the records the daemon receives, live",
                       description="Show every record the daemon receives as it arrives, at "
                       "any level (records no output keeps too), until interrupted (Ctrl-C). "
                       "A follower that reads too slowly is told how many records it missed.")
    c.add_argument("--filters", metavar="FILTERS",
                   help="only the records these filters let through, as in "
                   "daemon-log-filters (\"1:qemu 3:remote\"); default: every record")
    c.add_argument("--json", action="store_true",
                   help="one JSON object per record, with every field")
    return p


def _add_for(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--for", dest="duration", metavar="DURATION",
                     help="make the change for this long only (30s, 10m, 1h, 1h30m): then "
                     "the previous value comes back by itself")


# -- talking to the daemon ---------------------------------------------------------------
def request(path: str, cmd: str, args: List[str], **extra: Any) -> Any:
    """Send one request to the admin socket at *path*; return its result or raise
    AdminError with the sentence for the user."""
    return exchange(path, cmd, args, **extra).get("result")


def exchange(path: str, cmd: str, args: List[str], **extra: Any) -> Dict[str, Any]:
    """request(), but the whole answer (a get's ``temporary`` too)."""
    sock = _connect(path, cmd, args, **extra)
    try:
        line, _rest = _read_line(sock, path)
    finally:
        sock.close()
    return _parse_answer(line, path)


def _connect(path: str, cmd: str, args: List[str], **extra: Any) -> socket.socket:
    """A connection to the admin socket at *path* that has sent the request."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(path)
    except OSError as err:
        sock.close()
        raise AdminError(f"cannot connect to virlogd at {path}: "
                         f"{err.strerror or err}{_hint(err)}") from None
    try:
        sock.sendall((json.dumps({"cmd": cmd, "args": args, **extra}) + "\n").encode("utf-8"))
    except OSError:
        pass        # refused at once (uid check): its answer may already be waiting
    return sock


def _parse_answer(line: bytes, path: str) -> Dict[str, Any]:
    try:
        answer = json.loads(line.decode("utf-8"))
        ok = answer["ok"]
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise AdminError(f"unexpected answer from virlogd at {path}: "
                         f"{line[:200].decode('utf-8', 'replace')!r}") from None
    if not ok:
        if answer.get("socket") == "client":    # the client socket's answer (admin.py)
            raise AdminError(f"{path} is virlogd's client socket, where programs send their "
                             f"records, not its admin socket: give -S the admin socket "
                             f"(virlogd's --admin-socket; default "
                             f"{defaults.admin_socket_path()})")
        raise AdminError(str(answer.get("error") or "the daemon refused the request"))
    return answer


def _hint(err: OSError) -> str:
    if err.errno in (errno.ENOENT, errno.ECONNREFUSED):
        return " (is virlogd running?)"
    if err.errno == errno.EACCES:
        return " (only the user virlogd runs as may use its admin socket)"
    return ""


def _read_line(sock: socket.socket, path: str) -> Tuple[bytes, bytes]:
    """The first line the daemon sends, and what came after it."""
    buf = bytearray()
    while b"\n" not in buf:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise AdminError(f"virlogd at {path} did not answer within "
                             f"{TIMEOUT:g} seconds") from None
        except OSError as err:
            if buf:
                break
            raise AdminError(f"lost the connection to virlogd at {path}: "
                             f"{err.strerror or err}") from None
        if not data:
            break
        buf += data
        if len(buf) > MAX_ANSWER:
            raise AdminError(f"answer from virlogd at {path} is too large")
    if not buf:
        raise AdminError(f"virlogd at {path} closed the connection without answering")
    line, _sep, rest = bytes(buf).partition(b"\n")
    return line, rest


# -- showing the answers -----------------------------------------------------------------
def format_stats(stats: Dict[str, Any]) -> str:
    """A readable table of a ``stats`` answer."""
    rows = [("Records received", str(stats.get("received", 0)))]
    if "own" in stats:          # the daemon's own records (its start, changes, reports)
        rows.append(("Daemon's own records", str(stats["own"])))
    dropped = stats.get("dropped") or {}
    rows.append(("Records dropped", str(sum(dropped.values()))))
    rows += [(f"  {reason}", str(count)) for reason, count in sorted(dropped.items())]
    rows.append(("Clients connected", str(stats.get("clients", 0))))
    rows.append(("Buffer", _buffer(stats.get("buffer") or {})))
    followers = stats.get("followers")
    if followers is not None:   # the admin side's numbers (a real daemon's stats)
        missed = int(followers.get("missed", 0) or 0)
        rows.append(("Followers", f"{followers.get('connected', 0)}" +
                     (f" ({missed} records missed, too slow)" if missed else "")))
    if "admin_changes" in stats:
        rows.append(("Admin changes", str(stats["admin_changes"])))
    for change in stats.get("temporary") or ():
        rows.append((f"  {change.get('setting')}", _temporary(change, with_value=True)))
    width = max(len(label) for label, _ in rows) + 1
    lines = [f" {label + ':':<{width}} {value}" for label, value in rows]
    outputs = stats.get("outputs") or []
    if outputs:
        lines.append("")
        table = [("Output", "Written", "Failed", "Dropped", "Last error")]
        table += [(str(o.get("output", "?")), str(o.get("written", 0)), str(o.get("failed", 0)),
                   str(o.get("dropped", 0)), str(o.get("last_error") or "-")) for o in outputs]
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        for row in table:
            lines.append(f" {row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  "
                         f"{row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}  {row[4]}".rstrip())
    return "\n".join(lines)


def _temporary(change: Dict[str, Any], with_value: bool = False) -> str:
    """A timed change as a get and stats show it."""
    text = (f"\"{change.get('value')}\", " if with_value else "") + \
        f"reverts to \"{change.get('reverts_to')}\" in " \
        f"{format_duration(float(change.get('remaining') or 0))}"
    return text + f" (set for {change.get('for')} by {change.get('by')})"


def _buffer(buf: Dict[str, Any]) -> str:
    size, used = int(buf.get("size", 0) or 0), int(buf.get("used", 0) or 0)
    if size <= 0:
        return "disabled"
    text = f"{used} of {size} bytes used ({100.0 * used / size:.1f}%)"
    skipped = int(buf.get("skipped", 0) or 0)
    if skipped:
        text += f", {skipped} records too large to keep"
    return text


def run(args: argparse.Namespace) -> None:
    path = args.socket or defaults.admin_socket_path()
    cmd = args.command
    if cmd in LABELS:
        if args.value is None:
            if args.duration is not None:
                raise AdminError(f"'--for' needs a value to set, as in 'virlogd-admin {cmd} "
                                 f"VALUE --for 10m'")
            answer = exchange(path, cmd, [])
            # virt-admin's format: " %-15s" label, then the value (empty when unset)
            print(f" {LABELS[cmd]}: {answer.get('result')}")
            if answer.get("temporary"):
                print(f" Temporary: {_temporary(answer['temporary'])}")
        elif args.duration is not None:
            request(path, cmd, [args.value], **{"for": args.duration})
        else:
            request(path, cmd, [args.value])
    elif cmd == "dump":
        count = request(path, "dump", [])
        print(f" Dumped {count} record{'' if count == 1 else 's'} from the buffer")
    elif cmd == "stats":
        stats = request(path, "stats", [])
        if args.json:
            print(json.dumps(stats, indent=2, sort_keys=True))
        elif args.openmetrics:
            sys.stdout.write(render_openmetrics(stats))
        else:
            print(format_stats(stats))
    elif cmd == "follow":
        follow(path, args.filters, args.json)


def follow(path: str, filters: Optional[str], as_json: bool) -> None:
    """Show the records the daemon streams (follow.py), until interrupted."""
    sock = _connect(path, "follow", [] if filters is None else [filters])
    try:
        line, rest = _read_line(sock, path)
        _parse_answer(line, path)
        sock.settimeout(None)           # from now on, silence only means nothing happens
        out = sys.stdout.buffer
        buf = bytearray(rest)
        while True:
            lines = buf.split(b"\n")
            buf = bytearray(lines.pop())
            for raw in lines:
                _show(raw, as_json, out)
            out.flush()
            try:
                data = sock.recv(256 * 1024)
            except OSError as err:
                raise AdminError(f"lost the connection to virlogd at {path}: "
                                 f"{err.strerror or err}") from None
            if not data:
                raise AdminError(f"virlogd at {path} ended the follow (it stopped, or "
                                 f"closed the connection)")
            buf += data
    finally:
        sock.close()


def _show(raw: bytes, as_json: bool, out) -> None:
    """One line of the daemon's stream: a record, or how many were missed."""
    try:
        obj = json.loads(raw.decode("ascii"))
        missed = obj.get("missed")
        record = None if missed is not None else record_from_json(obj)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise AdminError(f"unexpected line from virlogd: "
                         f"{raw[:200].decode('ascii', 'replace')!r}") from None
    if as_json:
        out.write(raw + b"\n")
    elif missed is not None:
        out.flush()
        sys.stderr.write(f"{PROG}: {missed} record{'' if missed == 1 else 's'} missed "
                         f"(follower too slow)\n")
        sys.stderr.flush()
    else:
        out.write(format_line(record, True).encode("utf-8", "surrogateescape"))


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        run(args)
    except AdminError as err:
        sys.stderr.write(f"{PROG}: error: {err}\n")
        return 1
    except BrokenPipeError:
        # stdout closed early (| head): nothing more to say, and nothing at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        # follow runs until Ctrl-C: that is how it ends, not a failure
        return 0 if args.command == "follow" else 130
    return 0


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
