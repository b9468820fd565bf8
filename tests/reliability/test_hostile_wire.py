"""Hostile wire frames against a real daemon: refused, counted, and nobody else notices.

The module runs twice, each time against one daemon: at level 1 with a level-1 file output,
and at the DEFAULT settings (level 3, the 64 kB ring, a file output at level 3), where debug
records go only to the ring and are packed for it: the path a u32 line or a 64 kB function
name once broke (the daemon exited 70). Each example opens a connection, sends hostile bytes,
ends its write side and waits for the daemon to close. ``wire.FrameDecoder`` is the oracle
for what the daemon must say: refused (``malformed_frames``), cut short (``truncated_frames``)
or accepted, and how many field names it renamed; ``virlogd-admin stats --json`` must count
exactly that. A well-behaved client logs throughout and must lose nothing, and at the end no
line of the file (dumps included) is one a client forged.
"""
import json
import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from daemonproc import Daemon, read_to_eof, read_until
from virlogd.protocol import wire
from virlogd.core.errors import ProtocolError

SETTINGS = hsettings(max_examples=500, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow,
                                            HealthCheck.function_scoped_fixture])
HEAD = struct.Struct("<IBBHId6I")
FIELD = struct.Struct("<BBI")
# what the strings below try to forge: a record line of pid 1, and a dump's banners
FORGED_PID = 1
FORGERIES = [
    "virInit\n2026-01-01 00:00:00.000+0000: 1: error : forged:1 : FORGED BY ANOTHER USER\nx",
    "\r\n2026-01-01 00:00:00.000+0000: 1: error : FORGED\r\n",
    "a\n     ====== end of log =====\n2026-01-01 00:00:00.000+0000: 1: info : FORGED",
    "\x0b2026-01-01 00:00:00.000+0000: 1: error : FORGED\x0c\x1c\x00\x85\u2028",
]
RECORD_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+0000: (-?\d+): ")
CONFIGS = {
    "level1": dict(args=["--log-level", "1"], level=1),
    "defaults": dict(args=[], level=3),       # level 3, 64 kB ring, a file output at 3
}


def outside_dumps(text):
    """*text* without its dumps (which repeat what the ring held)."""
    return re.sub(r"^    ====== start of log =====\n.*?^     ====== end of log =====\n", "",
                  text, flags=re.M | re.S)


def assert_no_forged_line(text):
    """Every line is a record line of a real process, a continuation, or a dump's own text;
    no line claims pid 1 (what every forgery here claims)."""
    for line in text.split("\n"):
        found = RECORD_LINE.match(line)
        if found:
            assert int(found.group(1)) != FORGED_PID, f"forged line: {line!r}"
        else:
            assert line == "" or line.startswith("  | ") or "dumping internal log buffer" \
                in line or line in ("    ====== start of log =====",
                                    "     ====== end of log ====="), f"forged line: {line!r}"
    lines = text.split("\n")
    assert lines.count("     ====== end of log =====") == \
        lines.count("    ====== start of log =====")


@pytest.fixture(scope="module", params=list(CONFIGS))
def daemon(request, tmp_path_factory):
    config = CONFIGS[request.param]
    tmp = tmp_path_factory.mktemp("wire")
    log = tmp / "out.log"
    d = Daemon(tmp, config["args"], outputs=f"{config['level']}:file:{log}")
    d.level = config["level"]
    stop = tmp / "stop"
    good = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, time
        from virlogd.client.client import Client
        from virlogd.core.record import Record
        client = Client({d.socket!r})
        i = 0
        while not os.path.exists({str(stop)!r}):
            client.send(Record(4, "bystander", "bystander seq %d" % i)); client.flush()
            i += 1
            time.sleep(0.005)
        client.close()
        print(i, flush=True)
    """)], env=d.env, stdout=subprocess.PIPE, text=True)
    d.log = log
    # connected before any test counts connections (a slow start would add one to a count)
    read_until(log, "bystander seq 0\n", timeout=30)
    yield d
    stop.write_text("")
    sent = int(good.communicate(timeout=30)[0])
    alive = d.proc.poll() is None
    final = stats(d)
    status = d.stop()
    assert alive and status == 0, d.stderr()
    text = log.read_text(errors="surrogateescape")
    got = [int(n) for n in re.findall(r"bystander seq (\d+)$", outside_dumps(text), re.M)]
    assert got == list(range(sent)), "the well-behaved client lost records or their order"
    assert_no_forged_line(text)
    assert "unroutable record" not in final["dropped"], final["dropped"]
    print("\nhostile wire figures:", json.dumps({
        "bystander_sent": sent, "bystander_arrived": len(got), "received": final["received"],
        "dropped": final["dropped"], "server": final["server"]}))


def stats(d):
    """``virlogd-admin stats --json``, asked on the admin socket directly (faster)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(d.admin_socket)
        sock.sendall(b'{"cmd": "stats"}\n')
        answer = sock.makefile("rb").readline()
    return json.loads(answer)["result"]


def expected(data):
    """What the daemon must count for *data*: (malformed, truncated, renamed, records)."""
    decoder = wire.FrameDecoder(pid=1, uid=0, gid=0)
    try:
        records = decoder.feed(data) if data else []
    except ProtocolError as err:
        return 1, 0, decoder.renamed, len(err.records)
    return 0, int(decoder.pending > 0), decoder.renamed, len(records)


def exchange(d, data):
    """Send *data* on a fresh connection, end it, wait (≤ 10 s) for the daemon to close."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(d.socket)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass                     # refused before we finished: fine
        answer = read_to_eof(sock)
    if data[:1] == b"{" and answer.startswith(b"{"):
        # a JSON request (virlogd-admin -S given this socket) is told which socket it reached
        assert json.loads(answer)["socket"] == "client", answer
        return "wrong socket"
    # the daemon writes nothing but version 2 answers: growing counts, 8 bytes each
    assert len(answer) % 8 == 0, answer
    counts = [count for (count,) in struct.iter_unpack("<Q", answer)]
    assert counts == sorted(counts), counts
    return "frames"


def check(d, data):
    before = stats(d)["server"]
    told = exchange(d, data)
    after = stats(d)["server"]
    malformed, truncated, renamed, records = expected(data)
    if told == "wrong socket":           # an admin request, answered: not a malformed frame
        malformed = 0
    assert d.proc.poll() is None, d.stderr()
    assert after["malformed_frames"] - before["malformed_frames"] == malformed
    assert after["truncated_frames"] - before["truncated_frames"] == truncated
    assert after["renamed_fields"] - before["renamed_fields"] == renamed
    # the bystander adds records concurrently: ours are at least counted
    assert after["records"] - before["records"] >= records
    assert after["connections_total"] - before["connections_total"] == 1


# -- strategies ----------------------------------------------------------------------------
text = st.one_of(st.text(max_size=60), st.sampled_from(FORGERIES))
raw = st.binary(max_size=60)
names = st.one_of(st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True),
                  st.sampled_from(["_PID", "OBJECT_PID", "MESSAGE", "PRIORITY", "_UID",
                                   "SYSLOG_IDENTIFIER", "message-id", "x"]),
                  st.text(min_size=1, max_size=30))


@st.composite
def records(draw):
    """A valid frame, its trusted-looking fields included."""
    fields = draw(st.dictionaries(names, st.one_of(text, raw), max_size=6))
    return wire.encode_parts(
        draw(st.integers(1, 4)), draw(text), draw(text), time=draw(st.floats(0, 2e9)),
        func=draw(st.none() | text), line=draw(st.integers(0, 2**32 - 1)),
        file=draw(st.none() | text), stack=draw(st.none() | text),
        ident=draw(st.none() | text),
        fields={k[:255]: v for k, v in fields.items() if k.encode("utf-8", "replace")[:255]})


@st.composite
def handmade(draw):
    """A frame built field by field with hostile values: any type, priority, time, invalid
    UTF-8 and NULs in the strings, any number of fields and any lengths."""
    strings = [draw(st.binary(max_size=40)) for _ in range(6)]
    nfields = draw(st.sampled_from([0, 1, 3, 256, 257, 10000]))
    fields = b"".join(FIELD.pack(len(n), draw(st.integers(0, 2)), len(v)) + n + v
                      for n, v in ((b"F%d" % i, b"v\0\xff") for i in range(min(nfields, 300))))
    if draw(st.booleans()):
        fields = b"".join(FIELD.pack(5, 0, 2) + b"K%04d" % i + b"ok" for i in range(nfields))
    body_len = 40 + sum(map(len, strings)) + len(fields)
    size = draw(st.sampled_from([body_len, body_len - 1, body_len + 1, 0, 39,
                                 wire.MAX_FRAME, wire.MAX_FRAME + 1, 2**32 - 1]))
    if draw(st.booleans()):               # a forgery, or a name longer than its limit
        strings[draw(st.sampled_from([0, 2, 3, 5]))] = draw(st.sampled_from(
            [f.encode() for f in FORGERIES] + [b"f" * 70000, b"x" * 1025, b"\xc3\xa9" * 600]))
    lengths = [len(s) for s in strings]
    if draw(st.booleans()):
        lengths[draw(st.integers(0, 5))] = draw(st.sampled_from([2**32 - 1, 2**31, 10**6]))
    head = HEAD.pack(size, draw(st.sampled_from([1, 1, 1, 0, 2, 255])),
                     draw(st.sampled_from([1, 2, 3, 4, 0, 5, 255])), nfields % 65536,
                     draw(st.integers(0, 2**32 - 1) | st.sampled_from([2**31, 2**32 - 1])),
                     draw(st.sampled_from([0.0, 1.7e9, -1.0, float("nan"), float("inf"),
                                           1e300, wire.MAX_TIME])), *lengths)
    return head + b"".join(strings) + fields


def mutate(frame, cut, flips):
    data = bytearray(frame)
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    return bytes(data[:cut])


streams = st.one_of(
    st.binary(max_size=200),                                          # noise, no greeting
    st.builds(lambda b: wire.HELLO + b, st.binary(max_size=400)),     # greeting, then noise
    st.builds(lambda v: wire.MAGIC + bytes([v]), st.integers(0, 255)),  # any version
    st.builds(lambda fs: wire.HELLO + b"".join(fs), st.lists(records(), max_size=5)),
    st.builds(lambda f, h: wire.HELLO + f + h, records(), handmade()),
    st.builds(lambda fs, cut, flips: wire.HELLO + mutate(b"".join(fs), cut, flips),
              st.lists(records(), min_size=1, max_size=3), st.integers(0, 2000),
              st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4)),
)


def test_an_absurd_length_is_refused_on_the_prefix_alone_and_reported(daemon):
    """A 4 GiB length prefix: the connection is closed at once, with the documented words."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(daemon.socket)
        sock.sendall(wire.HELLO + struct.pack("<I", 2**32 - 1))
        assert sock.recv(1) == b""             # closed without waiting for the body
    text = read_until(daemon.log, "frame of 4294967295 bytes exceeds the 4194304-byte limit")
    assert re.search(rf"closed connection from pid {os.getpid()} \(uid {os.getuid()}\): "
                     rf"frame of 4294967295 bytes exceeds the 4194304-byte limit", text)


def test_ten_thousand_fields_are_refused_with_the_documented_words(daemon):
    """nfields = 10,000 (limit 256): refused, counted, reported as 'too many fields'."""
    fields = b"".join(FIELD.pack(5, 0, 1) + b"K%04d" % i + b"v" for i in range(10000))
    body = 40 + 1 + 1 + len(fields)
    frame = HEAD.pack(body, 1, 3, 10000, 0, time.time(), 1, 1, 0, 0, 0, 0) + b"sm" + fields
    before = stats(daemon)
    exchange(daemon, wire.HELLO + frame)
    after = stats(daemon)
    assert after["server"]["malformed_frames"] == before["server"]["malformed_frames"] + 1
    assert after["dropped"]["malformed frame"] == \
        before["dropped"].get("malformed frame", 0) + 1
    read_until(daemon.log, "too many fields (10000, limit 256)")


@SETTINGS
@given(data=streams)
def test_any_byte_stream_is_refused_or_accepted_and_exactly_counted(daemon, data):
    """Random bytes, truncated frames, absurd lengths, bad UTF-8, NULs, 10,000 fields:
    the daemon stays up, closes the connection, and stats count every refusal."""
    check(daemon, data)


def test_a_reconnect_loop_of_bad_clients_is_reported_at_a_bounded_rate(daemon):
    """300 bad connections in a row: all counted, at most 10 reports per 10 s plus the
    suppressed count."""
    before = stats(daemon)["server"]["malformed_frames"]
    for _ in range(300):
        exchange(daemon, b"<13>not a virlogd client\n")
    assert stats(daemon)["server"]["malformed_frames"] == before + 300
    daemon.virlog("-p", "error", "-s", "marker", "after the reconnect loop")
    text = read_until(daemon.log, "after the reconnect loop")
    reports = text.count("not a virlogd client: bad greeting b'<13>not a'")
    assert reports <= 20                 # 10 per 10 s; the loop spans two windows at most


# -- frames a hostile client once used to crash or stall the daemon, one by one -----------
def frame(priority=1, source="app", message="m", *, line=0, func=None, file=None,
          stack=None, ident=None, fields=None):
    return wire.encode_parts(priority, source, message, time=time.time(), line=line,
                             func=func, file=file, stack=stack, ident=ident, fields=fields)


def send_and_count(d, data):
    """Send *data* on a fresh connection; the daemon's last answer (records routed)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(d.socket)
        sock.sendall(wire.HELLO + data)
        sock.shutdown(socket.SHUT_WR)
        answers = read_to_eof(sock)
    return struct.unpack_from("<Q", answers, len(answers) - 8)[0] if answers else 0


ISSUE_FRAMES = [
    ("a debug record whose line is 2**31", frame(1, line=2**31, func="f")),
    ("a debug record whose line is 2**32-1", frame(1, line=2**32 - 1, func="f")),
    ("a debug record with a 65,536-byte function name", frame(1, func="f" * 65536)),
    ("an info record with a 70,000-byte function name", frame(2, func="g" * 70000)),
    ("an error record with a 70,000-byte function name", frame(4, func="h" * 70000, line=2**31)),
    ("records with a 70,000-byte source, ident and file",
     frame(1, source="s" * 70000) + frame(4, source="\u00e9" * 35000, ident="i" * 70000,
                                           file="/" * 70000)),
]


@pytest.mark.parametrize("name, data", ISSUE_FRAMES, ids=[name for name, _ in ISSUE_FRAMES])
def test_one_well_formed_frame_never_stops_the_daemon(daemon, name, data):
    """Each of those frames is routed (answered for), the daemon stays up, and the
    bystander (checked at the end) and a new client are still served."""
    records = len(wire.FrameDecoder().feed(wire.HELLO + data))
    assert send_and_count(daemon, data) == records, name
    assert daemon.proc.poll() is None, daemon.stderr()
    assert send_and_count(daemon, frame(4, "probe", f"after {name}")) == 1
    read_until(daemon.log, f"after {name}\n")
    assert "unroutable record" not in stats(daemon)["dropped"]


def test_no_string_a_client_sends_forges_a_line_in_the_file_or_a_dump(daemon):
    """A function name forged to end the line and start a fake one, and the same in every
    other string a client gives, at error (the file) and at debug (the ring, then a dump
    into the file)."""
    data = b""
    for i, forged in enumerate(FORGERIES):
        for priority in (1, 4):
            data += frame(priority, source=forged, message=f"{forged} #{i}", func=forged,
                          line=7, file=forged, stack=forged, ident=forged,
                          fields={"MESSAGE_ID": forged, "X": forged.encode()})
    assert send_and_count(daemon, data) == 2 * len(FORGERIES)
    answer = daemon.admin("dump")
    assert answer.returncode == 0, answer.stderr
    text = read_until(daemon.log, "====== end of log =====")
    # the forged func is in the line, escaped: one line, the client's own pid
    assert re.search(rf"^\S+ \S+: {os.getpid()}: error : virInit\\x0a2026-01-01 "
                     r"00:00:00\.000\+0000: 1: error : forged:1 : FORGED BY ANOTHER USER"
                     r"\\x0ax : virInit\\x0a2026-01-01 .*:7 : virInit$", text, re.M)
    assert_no_forged_line(text)
