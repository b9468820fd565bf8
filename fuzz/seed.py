"""Writes the seed corpus, ``fuzz/corpus/TARGET/seed-*``: valid and nearly valid inputs of
each kind, so the fuzzer starts past the greeting, the PRI and the JSON braces; and
``fuzz/regressions/TARGET/``: inputs too large to be worth mutating (over the 64 kB limits),
which each run replays first under the sanitizers, and the tests replay too.

Run once when the inputs change (``python fuzz/seed.py``); the files are committed, with what
``fuzz/run.py --merge`` added. The frames are built with the client's own encoder.
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from virlogd.protocol import wire  # noqa: E402

T = 1_764_662_400.5


def frame(priority=3, source="qemu.monitor", message="sent {\"execute\":\"cont\"}", **kw):
    kw.setdefault("time", T)
    return wire.encode_parts(priority, source, message, **kw)


def wire_seeds():
    yield "one", wire.HELLO + frame()
    yield "v1", wire.HELLO_V1 + frame(1, "util.log", "debug line", func="virFoo", line=42,
                                      file="util.c")
    yield "all", wire.HELLO + b"".join(
        frame(p, s, m, func="virCommandRun", line=p * 100, file="vircommand.c",
              stack="Traceback (most recent call last):\n  File \"x.py\", line 1",
              ident="libvirtd", fields=f)
        for p, s, m, f in ((1, "qemu.qemu_monitor", "debug", {"MESSAGE_ID": "abc"}),
                           (2, "util.log", "info\nwith a newline", {"BIN": b"\0\xff"}),
                           (3, "rpc.server", "warn \xe9", {}),
                           (4, "virlogd.server", "", {"LIBVIRT_DOMAIN": "vm1",
                                                       "bad name": "renamed"})))
    yield "fields-max", wire.HELLO + frame(fields={f"F{i}": str(i) for i in range(40)})
    yield "long-names", wire.HELLO + frame(1, source="s" * 1100, func="f" * 1100,
                                           ident="i" * 1100, file="x" * 4200)
    # what the issue found: a line number over 2**31-1, a newline in the function name; at
    # debug (packed into the ring) and at error (printed)
    yield "line-2-31", wire.HELLO + frame(1, line=2**31) + frame(4, line=2**32 - 1)
    yield "func-newline", wire.HELLO + frame(4, func="virInit\n2026-01-01 00:00:00.000+0000: "
                                                    "1: error : forged:1 : FORGED\nx")
    yield "ident-newline", wire.HELLO + frame(3, ident="a\nb", source="s\nt", file="f\nx")
    good = frame()
    yield "cut", wire.HELLO + good + good[:20]
    yield "bad-greeting", b"VIRLOGX\x02" + good
    yield "bad-length", wire.HELLO + struct.pack("<I", 5 * 1024 * 1024) + good[4:]


def wire_regressions():
    """Inputs too large to mutate usefully, replayed before each run (fuzz/regressions)."""
    # the 64 kB function name (the ring's 2-byte length field), at debug and info
    yield "func-64k", wire.HELLO + frame(1, func="f" * 65536) + frame(2, func="g" * 65536)
    yield "big-message", wire.HELLO + frame(2, message="x\n" * 40000) + frame(1, "m" * 70000)


def syslog_regressions():
    yield "over-64k", b"<13>tag: " + b"z" * 70000


def admin_regressions():
    yield "over-64k", b'{"cmd":"daemon-log-filters","args":["' + b"1:a " * 17000 + b'"]}\n'
    yield "over-64k-no-newline", b"x" * 70000


def syslog_seeds():
    lines = [
        "<13>Dec  2 08:00:00 host logger[4242]: hello from logger --rfc3164",
        "<30>Dec  2 08:00:00 systemd[1]: Started something.",
        "<14>myapp: Python SysLogHandler with an ident",
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "
        "[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] "
        "\ufeffAn application event log entry...",
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed",
        "<13>1 - - app - - [a b=\"c\\\"]\"][d] msg",
        "no PRI at all",
        "<999>too large a PRI",
        "<7>Jan 31 23:59:59 host tag[]: empty pid",
        "<191>tag:",
    ]
    for number, line in enumerate(lines):
        yield f"line{number}", line.encode("utf-8")
    yield "nul", b"<13>tag: with a NUL\0 and \xff invalid\n\0"


def admin_seeds():
    requests = [{"cmd": "stats"}, {"cmd": "dump"}, {"cmd": "daemon-log-filters"},
                {"cmd": "daemon-log-filters", "args": ["3:remote 4:event 1:+qemu"]},
                {"cmd": "daemon-log-outputs", "args": ["1:file:/tmp/x.log 3:stderr"]},
                {"cmd": "daemon-log-outputs", "args": [""]},
                {"cmd": "daemon-log-level", "args": ["1"]},
                {"cmd": "daemon-log-level", "args": ["debug"]},
                {"cmd": "nope", "args": [1]}]
    for number, request in enumerate(requests):
        yield f"req{number}", (json.dumps(request) + "\n").encode()
    yield "several", b"".join((json.dumps(r) + "\n").encode() for r in requests)
    yield "malformed", b'{"cmd": \n[1,2]\n\xff\xfe\n{"cmd":"stats","args":"x"}\n'


def config_seeds():
    with open(os.path.join(os.path.dirname(HERE), "etc", "virlogd.conf"), "rb") as handle:
        yield "etc-virlogd.conf", handle.read()
    yield "all-keys", (
        'log_level = 1\nlog_filters = "3:remote 4:event 1:+qemu"\n'
        'log_outputs = "1:file:virlogd.log 3:stderr 2:syslog:libvirtd"\n'
        'log_buffer_size = 1\nsocket_path = "sock"\nsocket_perms = "0660"\n'
        'socket_group = "root"\nadmin_socket_path = "/run/x"\nsyslog_socket_path = "log"\n'
        'max_size = 1048576\nmax_backups = 2\nmax_clients = 10\nremote_ca_file = "ca.pem"\n'
        'remote_queue_size = 5\n').encode()
    yield "problems", (b'log_level = "debug"\nlog_levle = 2\nlog_buffer_size = -1\n'
                       b'socket_perms = 666\nlog_outputs = "9:nowhere"\n[table]\nx = 1\n')
    yield "not-toml", b"log_level = \n= 3\n"


def specs_seeds():
    strings = ["3:remote 4:event", "1:libvirt 1:util 1:qemu", "1:file:/var/log/x.log",
               "3:syslog:libvirtd 1:file:/tmp/libvirt.log", "1:*", "1:a:b", "3:*remote*",
               "1:stderr 3:stderr", "3:remote 4:event 3:util.json 3:rpc 1:*",
               "1:+qemu 2:util.[ab]* 4:?", "1:file:virsh.log", "2:journald",
               "1:virlogd 2:virlogd:/run/virlogd-sock", "3:remote:tls://[::1]:6514",
               "3:remote:tcp://log.example.com:514", "9:bad", "1:", "1:+"]
    for number, text in enumerate(strings):
        yield f"s{number}", text.encode()


def main() -> None:
    for target, seeds in (("wire", wire_seeds), ("syslog", syslog_seeds),
                          ("admin", admin_seeds), ("config", config_seeds),
                          ("specs", specs_seeds)):
        folder = os.path.join(HERE, "corpus", target)
        os.makedirs(folder, exist_ok=True)
        for name, data in seeds():
            with open(os.path.join(folder, f"seed-{name}"), "wb") as handle:
                handle.write(data)
    for target, inputs in (("wire", wire_regressions), ("syslog", syslog_regressions),
                           ("admin", admin_regressions)):
        folder = os.path.join(HERE, "regressions", target)
        os.makedirs(folder, exist_ok=True)
        for name, data in inputs():
            with open(os.path.join(folder, name), "wb") as handle:
                handle.write(data)


if __name__ == "__main__":
    main()
