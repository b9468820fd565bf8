"""Forwarding to a real syslog-ng, the strictest RFC 5424 receiver, beside rsyslog.

syslog-ng's ``syslog()`` source parses RFC 5424 with octet counting; a frame it cannot parse
becomes a message of its own, ``Error processing log message: ...`` from ``syslog-ng``. The
test's syslog-ng writes every message it parsed as one JSON line (the header fields, every
structured-data parameter, the message) and the same messages' SD and MSG raw into a second
file: every frame must come out parsed field by field, and the raw file must be valid UTF-8.

syslog-ng runs from ``.venv/syslog-ng`` (``scripts/get-syslog-ng.sh`` unpacks Debian's
``syslog-ng-core`` there: installing it would remove rsyslog) or from a system install,
with its own configuration, pid file, control socket and persist file in the test's
directory, on a TCP port of 127.0.0.1. In CI a missing syslog-ng fails the test.
"""
from __future__ import annotations

import glob
import json
import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from tests.conftest import _stop_pid, dgram_listening, require_real, wait_until
from virlogd.outputs import OutputContext, build
from virlogd.outputs.remote import RemoteOutput, unreversible
from virlogd.core.record import Record
from virlogd.core.router import start
from virlogd.core.specs import parse_outputs

LOCAL = Path(__file__).resolve().parents[2] / ".venv" / "syslog-ng"
SD_ID = "virlogd@32473"


def syslog_ng_command() -> (List[str], Dict[str, str]):
    binary = LOCAL / "usr" / "sbin" / "syslog-ng"
    if binary.exists():
        modules = sorted(glob.glob(str(LOCAL / "usr" / "lib" / "syslog-ng" / "3.*")))
        if not modules:
            require_real(f"{LOCAL} has no syslog-ng modules (re-run scripts/get-syslog-ng.sh)")
        return ([str(binary), f"--module-path={modules[-1]}"],
                {"LD_LIBRARY_PATH": str(LOCAL / "usr" / "lib" / "syslog-ng")})
    for path in ("/usr/sbin/syslog-ng", "/sbin/syslog-ng"):
        if os.access(path, os.X_OK):
            return [path], {}
    require_real("syslog-ng is not available (bash scripts/setup.sh unpacks it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CONF = """\
@version: 3.38
options {{ keep-hostname(yes); stats-freq(0); frac-digits(6); log-msg-size(1048576); }};
source s_net {{ syslog(ip("127.0.0.1") port({port}) transport("tcp") flags(validate-utf8)
                      max-connections(10)); }};
destination d_json {{ file("{dir}/parsed.jsonl"
    template("$(format-json --scope rfc5424 --scope sdata --key ISODATE --key MSGID)\\n")); }};
destination d_raw {{ file("{dir}/raw.log" template("$SDATA $MSG\\n")); }};
log {{ source(s_net); destination(d_json); destination(d_raw); }};
"""


class SyslogNg:
    """A syslog-ng receiving RFC 5424 on 127.0.0.1:``port``; ``messages(count)`` is what it
    parsed (dicts of format-json), ``raw()`` the bytes of its raw file."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.cmd, extra = syslog_ng_command()
        self.env = dict(os.environ, **extra)
        self.proc: Optional[subprocess.Popen] = None
        for _attempt in range(5):           # a port another test took meanwhile: another
            self.port = free_port()
            if self._start():
                return
        raise AssertionError(f"syslog-ng did not start: {self.output()}")

    def _start(self) -> bool:
        conf = self.dir / "syslog-ng.conf"
        conf.write_text(CONF.format(port=self.port, dir=self.dir))
        with open(self.dir / "syslog-ng.out", "ab") as out:
            self.proc = subprocess.Popen(
                [*self.cmd, "-F", "--no-caps", "-f", str(conf), "-p", str(self.dir / "pid"),
                 "-c", str(self.dir / "ctl"), "-R", str(self.dir / "persist")],
                env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        wait_until(lambda: self.accepts() or self.proc.poll() is not None, 10,
                   "syslog-ng to listen")
        if self.proc.poll() is None:
            return True
        self.proc = None
        return False

    def accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def output(self) -> str:
        try:
            return (self.dir / "syslog-ng.out").read_text(errors="replace")
        except OSError:
            return ""

    def messages(self, count: int, timeout: float = 10.0) -> List[dict]:
        path = self.dir / "parsed.jsonl"

        def enough():
            try:
                lines = path.read_bytes().split(b"\n")[:-1]
            except FileNotFoundError:
                return None
            # the probe connections of accepts() carry nothing: only real messages count
            return lines if len(lines) >= count else None
        lines = wait_until(enough, timeout, f"{count} messages in {path}")
        return [json.loads(line) for line in lines]

    def raw(self) -> bytes:
        return (self.dir / "raw.log").read_bytes()

    def stop(self) -> None:
        if self.proc is not None:
            _stop_pid(self.proc.pid, self.proc, "syslog-ng")
            self.proc = None


@pytest.fixture
def syslog_ng(short_dir):
    path = Path(short_dir) / "syslog-ng"
    path.mkdir()
    server = SyslogNg(path)
    yield server
    server.stop()


def remote(url: str) -> RemoteOutput:
    specs, err = parse_outputs(f"1:remote:{url}")
    assert err is None
    return build(specs[0], OutputContext(hostname="testhost"))


def surrogates(data: bytes) -> str:
    """Bytes as a client's record carries them (not UTF-8: surrogateescape)."""
    return data.decode("utf-8", "surrogateescape")


# Each: the record, then what the collector must show once the escapes are undone.
TRICKY = [
    Record(4, "qemu.monitor", "plain ASCII", pid=4711, ident="libvirtd", func="probe",
           line=278, file="qemu.c", fields={"MESSAGE_ID": "8ae2f3fb-2dbe-498e-8fbd-012d40afa361",
                                            "LIBVIRT_QEMU_BINARY": 'C:\\qemu "kvm" [x]'}),
    Record(3, "i18n", "héllo wörld ✓", pid=42, ident="app"),
    Record(3, surrogates(b"tag\xff\xfe"), "a relayed tag that is not UTF-8", pid=43,
           ident=surrogates(b"tag\xff\xfe")),
    Record(3, "bytes", surrogates(b"\xef\xbb\xbf\xff\xfe after a BOM"), pid=44, ident="app"),
    Record(3, "bytes", surrogates(b"no BOM \xc3( bad"), pid=45, ident="app"),
    Record(3, "bom", "\ufeffstarts with its own BOM", pid=46, ident="app"),
    Record(2, "fields", "fields that are not UTF-8", pid=47, ident="app",
           fields={"LIBVIRT_BAD": surrogates(b"\xff\x80 and \\x41 literally"),
                   "LIBVIRT_RAW": b"raw \xc3\xa9 \xe9 bytes", "LIBVIRT_WINPATH": "C:\\xen\\x"}),
    Record(2, "multi", "first line\nsecond line", pid=48, ident="app"),
]


def as_bytes(value) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")


def check_parsed(record: Record, parsed: dict) -> None:
    """Every field of one frame, as syslog-ng parsed it, against the record sent."""
    app = parsed.get("PROGRAM")
    expected_app = "".join(c if 0x21 <= ord(c) <= 0x7e else "_" for c in record.ident)
    assert app == expected_app, parsed
    assert parsed["PID"] == str(record.pid), parsed
    assert parsed["HOST"] == "testhost", parsed
    assert "MSGID" not in parsed or parsed["MSGID"] == "", parsed
    assert parsed["FACILITY"] == "daemon", parsed
    assert parsed["PRIORITY"] == {1: "debug", 2: "info", 3: "warning", 4: "err"}[
        record.priority], parsed
    params = parsed["_SDATA"][SD_ID]
    sent = {"source": record.source}
    if record.func:
        sent["func"] = record.func
    if record.line:
        sent["line"] = record.line
    if record.file:
        sent["file"] = record.file
    sent.update(record.fields)
    assert sorted(params) == sorted(sent), parsed
    for name, value in sent.items():
        assert unreversible(params[name]) == as_bytes(value), (name, params[name])
    assert unreversible(parsed["MESSAGE"]) == as_bytes(record.message), parsed


def test_syslog_ng_parses_every_field_of_every_frame(syslog_ng):
    """Non-UTF-8 values, tags and messages, BOM rules: all parsed, none rejected, the
    collector's files valid UTF-8, the original bytes recovered from the escapes."""
    out = remote(f"tcp://127.0.0.1:{syslog_ng.port}")
    try:
        start(out, TRICKY[0].time)       # the two headers, as the router gives them
        for record in TRICKY:
            out.handle(record, "")
        out.flush()
        assert out.wait_sent(10)
        parsed = syslog_ng.messages(2 + len(TRICKY))
    finally:
        out.close()
    rejected = [m for m in parsed if m.get("PROGRAM") == "syslog-ng"]
    assert rejected == [], rejected
    assert len(parsed) == 2 + len(TRICKY), parsed
    assert [m["MESSAGE"] for m in parsed[:1]][0].startswith("virlogd version: ")
    for record, message in zip(TRICKY, parsed[2:]):
        check_parsed(record, message)
    syslog_ng.raw().decode("utf-8")          # raises if syslog-ng was handed invalid UTF-8


def test_the_daemon_relays_a_non_utf8_field_to_syslog_ng_and_rsyslog(tmp_path, syslog_ng,
                                                                    rsyslog_server):
    """A real virlogd forwarding to both collectors: virlog's non-UTF-8 field and message
    arrive parsed, valid UTF-8, and reversible."""
    from tests.daemonproc import VIRLOG, Daemon
    daemon = Daemon(tmp_path, outputs=f"1:remote:tcp://127.0.0.1:{syslog_ng.port} "
                                      f"1:remote:tcp://127.0.0.1:{rsyslog_server.port}")
    try:
        argv_bytes = os.fsdecode(b"caf\xe9 \xff")      # as a shell passes Latin-1 bytes
        done = subprocess.run([VIRLOG, "-S", daemon.socket, "-p", "warning", "-s", "latin1",
                               "--field", f"LIBVIRT_NAME={argv_bytes}", f"msg {argv_bytes}"],
                              env=daemon.env, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr
        parsed = syslog_ng.messages(3)          # the two headers, then the record
        lines = rsyslog_server.lines(3)
    finally:
        assert daemon.stop() == 0
    assert [m for m in parsed if m.get("PROGRAM") == "syslog-ng"] == []
    mine = [m for m in parsed if m["_SDATA"][SD_ID]["source"] == "latin1"]
    assert len(mine) == 1, parsed
    assert unreversible(mine[0]["_SDATA"][SD_ID]["LIBVIRT_NAME"]) == b"caf\xe9 \xff"
    assert unreversible(mine[0]["MESSAGE"]) == b"msg caf\xe9 \xff"
    syslog_ng.raw().decode("utf-8")
    relayed = [line for line in lines if 'source="latin1"' in line]
    assert len(relayed) == 1, lines
    assert re.fullmatch(r'app=\S+ procid=\d+ msgid=- pri=28 sd=\[virlogd@32473 '
                        r'source="latin1" LIBVIRT_NAME="caf\\\\xe9 \\\\xff"\] '
                        r'msg=msg caf\\xe9 \\xff', relayed[0]), relayed
    rsyslog_server.text().encode("utf-8", "surrogateescape").decode("utf-8")


def test_a_relayed_syslog_tag_that_is_not_utf8_reaches_syslog_ng_parsed(tmp_path, syslog_ng):
    """A program's RFC 3164 datagram to the daemon's syslog input, its tag in Latin-1: the
    daemon forwards it; syslog-ng parses the frame, the tag comes back from the escapes."""
    from tests.daemonproc import Daemon
    conf = tmp_path / "virlogd.conf"
    syslog_in = tmp_path / "syslog-in"
    conf.write_text(f'syslog_socket_path = "{syslog_in}"\n')
    daemon = Daemon(tmp_path, ["-f", str(conf)],
                    outputs=f"1:remote:tcp://127.0.0.1:{syslog_ng.port}")
    try:
        # bound after the client socket the Daemon helper waits for
        wait_until(lambda: dgram_listening(str(syslog_in)), 10, "the syslog input")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"<28>Nov  3 14:29:04 caf\xe9: relayed \xff bytes", str(syslog_in))
        parsed = syslog_ng.messages(3)
    finally:
        assert daemon.stop() == 0
    assert [m for m in parsed if m.get("PROGRAM") == "syslog-ng"] == []
    relayed = [m for m in parsed if unreversible(m["_SDATA"][SD_ID]["source"]) == b"caf\xe9"]
    assert len(relayed) == 1, parsed
    assert relayed[0]["PROGRAM"] == "caf_"
    assert unreversible(relayed[0]["MESSAGE"]) == b"relayed \xff bytes"
    syslog_ng.raw().decode("utf-8")
