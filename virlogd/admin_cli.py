"""``virlogd-admin``: change and inspect a running virlogd, like libvirt's ``virt-admin``.

    virlogd-admin [-S PATH] daemon-log-filters [FILTERS]
    virlogd-admin [-S PATH] daemon-log-outputs [OUTPUTS]
    virlogd-admin [-S PATH] daemon-log-level [LEVEL]
    virlogd-admin [-S PATH] dump
    virlogd-admin [-S PATH] stats [--json]

A get prints virt-admin's line (`` Logging filters: 3:remote 4:event``); a set prints
nothing. The daemon validates everything (one grammar, one wording: see ``admin.py`` for the
protocol); this side only carries the request and shows the answer.

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
from typing import Any, Dict, List, Optional

from . import __version__, defaults

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
    c = sub.add_parser("daemon-log-level", help="show the default log level, or set it",
                       description="With no argument, show the default priority; with "
                       "LEVEL (1-4 or debug, info, warning, error), set it.")
    c.add_argument("value", metavar="LEVEL", nargs="?")
    sub.add_parser("dump", help="write the ring buffer to the outputs (like SIGUSR2)")
    c = sub.add_parser("stats", help="records received, written, dropped; clients; buffer")
    c.add_argument("--json", action="store_true", help="print the statistics as JSON")
    return p


# -- talking to the daemon ---------------------------------------------------------------
def request(path: str, cmd: str, args: List[str]) -> Any:
    """Send one request to the admin socket at *path*; return its result or raise
    AdminError with the sentence for the user."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(TIMEOUT)
    try:
        try:
            sock.connect(path)
        except OSError as err:
            raise AdminError(f"cannot connect to virlogd at {path}: "
                             f"{err.strerror or err}{_hint(err)}") from None
        try:
            sock.sendall((json.dumps({"cmd": cmd, "args": args}) + "\n").encode("utf-8"))
        except OSError:
            pass        # refused at once (uid check): its answer may already be waiting
        line = _read_line(sock, path)
    finally:
        sock.close()
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
    return answer.get("result")


def _hint(err: OSError) -> str:
    if err.errno in (errno.ENOENT, errno.ECONNREFUSED):
        return " (is virlogd running?)"
    if err.errno == errno.EACCES:
        return " (only the user virlogd runs as may use its admin socket)"
    return ""


def _read_line(sock: socket.socket, path: str) -> bytes:
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
    return bytes(buf.split(b"\n", 1)[0])


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
            # virt-admin's format: " %-15s" label, then the value (empty when unset)
            print(f" {LABELS[cmd]}: {request(path, cmd, [])}")
        else:
            request(path, cmd, [args.value])
    elif cmd == "dump":
        count = request(path, "dump", [])
        print(f" Dumped {count} record{'' if count == 1 else 's'} from the buffer")
    elif cmd == "stats":
        stats = request(path, "stats", [])
        if args.json:
            print(json.dumps(stats, indent=2, sort_keys=True))
        else:
            print(format_stats(stats))


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
        return 130
    return 0


def main_entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    main_entry()
